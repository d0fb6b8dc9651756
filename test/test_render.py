"""The output renderer (contrast_semask_ros/render.py): only what is asked, bytes in message
order, reused buffers, checked against codec and visualize on fresh arrays."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TextureModel
from scenes import two_texture_scene

from contrast_semask_ros import codec
from contrast_semask_ros.backends import open_backend
from contrast_semask_ros.pipeline import Pipeline, PipelineConfig
from contrast_semask_ros.render import OUTPUTS, OutputRenderer
from contrast_semask_ros.visualize import cost_overlay, embedding_colours

H, W = 120, 200


def _result(model: TextureModel, reuse: bool):
    pipeline = Pipeline(open_backend(model.onnx), PipelineConfig(), reuse_outputs=reuse)
    rgb, _ = two_texture_scene(H, W)
    pipeline.process(rgb, 1)
    mask = np.full((H, W), np.nan, np.float32)
    mask[60:110, 10:60] = 0.2
    pipeline.add_patch(mask, 1)
    return pipeline, pipeline.process(rgb, 2), rgb


@pytest.mark.parametrize('reuse', [False, True])
def test_each_output_encodes_like_codec_and_visualize(texture_model: TextureModel,
                                                      reuse: bool) -> None:
    _, result, rgb = _result(texture_model, reuse)
    out = OutputRenderer(overlay_max_cost=1.0).render(result, rgb, OUTPUTS)
    assert set(out) == set(OUTPUTS)
    expected = {
        'cost': codec.array_to_fields(result.cost, '32FC1'),
        'confidence': codec.array_to_fields(result.confidence, '32FC1'),
        'embedding': codec.array_to_fields(codec.embedding_to_hwc(result.embedding),
                                           f'32FC{result.embedding.shape[0]}'),
        'cost_overlay': codec.array_to_fields(cost_overlay(rgb, result.cost, 1.0), 'rgb8'),
        'embedding_viz': codec.array_to_fields(embedding_colours(result.embedding), 'rgb8'),
    }
    for name, fields in expected.items():
        got = out[name]
        assert (got.height, got.width, got.encoding) == (fields.height, fields.width,
                                                         fields.encoding), name
        assert bytes(got.data) == fields.data, name
    assert out['cost_overlay'].encoding == 'rgb8'


def test_only_what_is_asked_and_buffers_are_reused(texture_model: TextureModel) -> None:
    pipeline, result, rgb = _result(texture_model, True)
    renderer = OutputRenderer()
    first = renderer.render(result, rgb, {'cost', 'cost_overlay'})
    assert set(first) == {'cost', 'cost_overlay'}
    second = renderer.render(pipeline.process(rgb, 3), rgb, {'cost', 'cost_overlay'})
    assert second['cost_overlay'].data is first['cost_overlay'].data
    assert second['cost'].data is first['cost'].data
    with pytest.raises(ValueError, match='unknown outputs'):
        renderer.render(result, rgb, {'depth'})
    no_conf = pipeline.process(rgb, 4, want_confidence=False)
    with pytest.raises(ValueError, match='want_confidence=True'):
        renderer.render(no_conf, rgb, {'confidence'})


def test_payload_goes_into_an_rclpy_image_without_a_copy() -> None:
    Image = pytest.importorskip('sensor_msgs.msg', reason='needs the ROS 2 wheels').Image
    buffer = codec.MessageBuffer((3, 4), np.float32)
    buffer.array[...] = np.arange(12, dtype=np.float32).reshape(3, 4)
    msg = codec.set_image_fields(Image(), 3, 4, '32FC1', buffer.data)
    assert msg.data is buffer.data and msg.step == 16
    np.testing.assert_array_equal(codec.image_to_array(msg), buffer.array)
    with pytest.raises(codec.CodecError, match='does not hold'):
        codec.set_image_fields(Image(), 3, 5, '32FC1', buffer.data)

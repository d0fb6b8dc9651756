"""contrast-semask-export onnx: files, EngineSpec, parity report, failures leave nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contrast_semask_ros import engine_spec
from contrast_semask_ros.atomic import stale_temp_files
from contrast_semask_ros.engine_spec import EngineSpec, EngineSpecError, read_spec
from contrast_semask_train.model import INPUT_NAMES, DeployWrapper, build_model, save_checkpoint

pytest.importorskip('onnxruntime', reason='onnxruntime is an export extra: pip install .[export]')


@pytest.fixture(scope='module')
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from contrast_semask_train.export import main

    root = tmp_path_factory.mktemp('export')
    ckpt = save_checkpoint(root / 'm.pt', build_model('micro', 8, 'contrastive'))
    out = root / 'models' / 'm.onnx'
    assert main(['onnx', str(ckpt), '--height', '64', '--width', '90', '--bank-size', '8',
                 '--out', str(out)]) == 0
    return out


def test_input_names_agree_between_runtime_and_graph() -> None:
    assert engine_spec.INPUT_NAMES == INPUT_NAMES


def _build(**overrides: object) -> EngineSpec:
    values: dict = dict(height=50, width=70, bank_size=5, embedding_dim=16, stride=4,
                        mean=(1.0, 2.0, 3.0), std=(4, 5, 6), class_names=('a', 'b'),
                        checkpoint_sha256='0' * 64, precision='fp32')
    return EngineSpec.build(**{**values, **overrides})


def test_engine_spec_build_takes_plain_values() -> None:
    spec = _build()
    assert spec.input_names == engine_spec.INPUT_NAMES
    assert spec.output_names == engine_spec.OUTPUT_NAMES
    assert [t.shape for t in spec.inputs] == [(1, 50, 70, 3), (5, 16), (5,), (5,), (1,)]
    assert [t.dtype for t in spec.inputs] == ['uint8', 'float32', 'float32', 'float32',
                                              'float32']
    assert [t.shape for t in spec.outputs] == [(1, 16, 13, 18), (1, 1, 50, 70), (1, 1, 50, 70)]
    assert spec.opset == 0 and spec.std == (4.0, 5.0, 6.0) and spec.model_config == {}
    logits = _build(with_logits=True, num_classes=2)
    assert logits.output_names == (*engine_spec.OUTPUT_NAMES, engine_spec.LOGITS_NAME)
    assert logits.output('logits').shape == (1, 2, 13, 18)
    assert logits.required_outputs == spec.outputs
    assert EngineSpec.from_dict(json.loads(logits.to_json())) == logits
    with pytest.raises(EngineSpecError, match='logits need num_classes'):
        _build(with_logits=True)
    with pytest.raises(EngineSpecError, match='must be >= 1'):
        _build(bank_size=0)
    renamed = {**spec.to_dict(), 'outputs': [{**t, 'name': n} for t, n in zip(
        spec.to_dict()['outputs'], ('embedding', 'confidence', 'cost'), strict=True)]}
    with pytest.raises(EngineSpecError, match='outputs must be'):
        EngineSpec.from_dict(renamed)


@pytest.mark.parametrize('with_logits', [False, True])
def test_deploy_spec_matches_the_wrapper(with_logits: bool) -> None:
    """EngineSpec.build's shapes (from the config) agree with a dry run of the wrapper."""
    from contrast_semask_train.export import deploy_spec

    wrapper = DeployWrapper(build_model('micro', 3, 'contrastive'), with_logits=with_logits)
    spec = deploy_spec(wrapper, 50, 70, 5, '0' * 64)
    assert spec.output_names == wrapper.output_names and spec.opset == 18
    assert spec.embedding_dim == wrapper.model.config.output_dim


@pytest.mark.slow
def test_export_writes_onnx_spec_and_passing_parity(exported: Path) -> None:
    spec = read_spec(exported)
    assert (spec.height, spec.width, spec.embedding_dim, spec.bank_size) == (64, 90, 16, 8)
    assert spec.input('image').dtype == 'uint8' and spec.input('image').shape == (1, 64, 90, 3)
    assert spec.output('embedding').shape == (1, 16, 16, 23)  # ceil(90 / 4) = 23
    assert spec.opset == 18 and spec.precision == 'fp32' and len(spec.checkpoint_sha256) == 64
    report = json.loads(Path(f'{exported}.parity.json').read_text())
    assert report['passed'] and set(report['max_abs_error']) == {
        'embedding', 'cost', 'confidence'}
    assert max(report['max_abs_error'].values()) < 1e-3
    assert min(report['min_cosine'].values()) > 0.9999
    assert stale_temp_files(exported.parent, exported.name) == []
    assert sorted(p.name for p in exported.parent.iterdir()) == [
        'm.onnx', 'm.onnx.json', 'm.onnx.parity.json']


@pytest.mark.slow
def test_parity_failure_exits_1_and_leaves_nothing(tmp_path: Path) -> None:
    from contrast_semask_train.export import main

    ckpt = save_checkpoint(tmp_path / 'm.pt', build_model('micro', 8, 'contrastive'))
    out = tmp_path / 'out' / 'm.onnx'
    # an impossible tolerance: float32 PyTorch and ONNX Runtime are never bit-identical here
    assert main(['onnx', str(ckpt), '--height', '32', '--width', '32', '--bank-size', '4',
                 '--atol', '0', '--out', str(out)]) == 1
    assert list(out.parent.iterdir()) == []
    assert main(['onnx', str(tmp_path / 'missing.pt'), '--height', '32', '--width', '32',
                 '--out', str(out)]) == 2


@pytest.mark.slow
def test_spec_errors_are_clear(exported: Path, tmp_path: Path) -> None:
    values = json.loads(Path(f'{exported}.json').read_text())
    with pytest.raises(EngineSpecError, match='unknown engine spec keys'):
        EngineSpec.from_dict({**values, 'extra': 1})
    with pytest.raises(EngineSpecError, match='not an engine spec'):
        EngineSpec.from_dict({**values, 'format': 'other'})
    bad = {**values, 'bank_size': 9}
    with pytest.raises(EngineSpecError, match="input 'prototypes' has shape"):
        EngineSpec.from_dict(bad)
    with pytest.raises(EngineSpecError, match='export with `contrast-semask-export onnx`'):
        read_spec(tmp_path / 'nothing.onnx')


@pytest.mark.slow
def test_fp16_export_keeps_fragile_ops_in_fp32(tmp_path: Path) -> None:
    import onnx

    from contrast_semask_train.export import main

    ckpt = save_checkpoint(tmp_path / 'm.pt', build_model('micro', 8, 'contrastive'))
    out = tmp_path / 'h.onnx'
    assert main(['onnx', str(ckpt), '--height', '64', '--width', '64', '--bank-size', '8',
                 '--fp16', '--out', str(out)]) == 0
    assert read_spec(out).precision == 'fp16'
    report = json.loads(Path(f'{out}.parity.json').read_text())
    assert report['passed'] and report['precision'] == 'fp16'
    assert min(report['min_cosine'].values()) >= 0.999
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(out))).graph
    dtypes = {v.name: v.type.tensor_type.elem_type
              for v in [*graph.value_info, *graph.input, *graph.output]}
    dtypes.update({t.name: t.data_type for t in graph.initializer})
    first_input = {}
    for node in graph.node:
        first_input.setdefault(node.op_type, set()).add(dtypes.get(node.input[0]))
    fp32, fp16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    for op in ('LayerNormalization', 'Softmax', 'ReduceL2'):
        assert first_input[op] == {fp32}, op
    assert fp16 in first_input['MatMul'] and first_input['Conv'] == {fp16}
    # inputs and outputs keep their types, so the runtime feeds an fp16 graph like an fp32 one
    assert [i.type.tensor_type.elem_type for i in graph.input] == [
        onnx.TensorProto.UINT8, fp32, fp32, fp32, fp32]
    assert {o.type.tensor_type.elem_type for o in graph.output} == {fp32}


def test_int8_calibration_inputs_come_from_real_images(exported: Path, tmp_path: Path) -> None:
    """The calibrator's feeds (TensorRT-free part): images resized to the engine size, a bank
    of the spec's shape; a missing or empty directory is a clear error before TensorRT."""
    import cv2
    import numpy as np

    from contrast_semask_train.tensorrt_build import (
        EngineBuildError,
        calibration_feeds,
        calibration_images,
    )

    spec = read_spec(exported)
    frames = tmp_path / 'frames'
    (frames / 'sub').mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        bgr = np.zeros((30, 50, 3), np.uint8)
        bgr[..., 2] = 200 + i  # red in BGR
        cv2.imwrite(str(frames / ('sub' if i % 2 else '.') / f'{i}.png'), bgr)
    (frames / 'notes.txt').write_text('not an image')
    files = calibration_images(frames, limit=3)
    assert len(files) == 3 and all(f.suffix == '.png' for f in files)
    feeds = calibration_feeds(spec, files[0], rng)
    assert {k: v.shape for k, v in feeds.items()} == {t.name: t.shape for t in spec.inputs}
    assert {k: str(v.dtype) for k, v in feeds.items()} == {t.name: t.dtype for t in spec.inputs}
    assert feeds['image'][0, ..., 0].min() >= 200 and feeds['image'][0, ..., 2].max() == 0  # RGB
    np.testing.assert_allclose(np.linalg.norm(feeds['prototypes'], axis=1), 1.0, rtol=1e-5)
    with pytest.raises(EngineBuildError, match='must be a directory'):
        calibration_images(tmp_path / 'missing')
    with pytest.raises(EngineBuildError, match='no .png'):
        calibration_images(_empty_dir(tmp_path))
    from contrast_semask_train.export import main

    # INT8 without images fails on the images, before it asks for TensorRT
    assert main(['trt', str(exported), '--int8', '--calib', str(_empty_dir(tmp_path)),
                 '--out', str(tmp_path / 'x.engine')]) == 2
    assert not (tmp_path / 'x.engine').exists()


def _empty_dir(root: Path) -> Path:
    path = root / 'empty'
    path.mkdir(exist_ok=True)
    return path

"""The exported deploy graph is safe for TensorRT 10.0-10.3 (JetPack 6), fp32 and --fp16:
uint8 only into the first Cast, bool only into comparisons/logical ops/Where/Cast, and no
epsilon that float16 rounds to 0 (NaN on black, white or no-prototype inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contrast_semask_train.model import build_model, save_checkpoint
from contrast_semask_train.tensorrt_build import tensor_types, tensorrt_type_violations

onnx = pytest.importorskip('onnx', reason='onnx is an export extra: pip install .[export]')
ort = pytest.importorskip('onnxruntime', reason='onnxruntime is an export extra')
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

H, W, K = 64, 64, 8


@pytest.fixture(scope='module', params=['fp32', 'fp16'])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from contrast_semask_train.export import export_onnx

    root = tmp_path_factory.mktemp(f'graph_{request.param}')
    ckpt = save_checkpoint(root / 'm.pt', build_model('micro', 8, 'contrastive'))
    out = root / f'm_{request.param}.onnx'
    export_onnx(ckpt, out, H, W, K, fp16=request.param == 'fp16')
    return out


@pytest.mark.slow
def test_exported_graph_casts_uint8_first_and_keeps_bool_to_comparisons(exported: Path) -> None:
    model = onnx.load(str(exported))
    assert tensorrt_type_violations(model) == []
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = tensor_types(graph)
    users = [node for node in graph.node if 'image' in node.input]
    assert [n.op_type for n in users] == ['Cast'], 'the first op on image must be the Cast'
    assert helper.get_attribute_value(users[0].attribute[0]) == TensorProto.FLOAT
    # the walk saw every tensor's type (an untyped tensor would hide a uint8/bool one)
    untyped = [o for node in graph.node for o in node.output if o and o not in types]
    assert untyped == []


def _graph(nodes: list, inputs: list, outputs: list) -> onnx.ModelProto:
    return helper.make_model(helper.make_graph(nodes, 'g', inputs, outputs),
                             opset_imports=[helper.make_opsetid('', 18)])


def test_the_type_walk_catches_what_tensorrt_10_0_rejects() -> None:
    """The checker itself: the old deploy graph's patterns (Transpose before Cast, a reshaped
    comparison) are reported; Cast first and comparison -> Where pass."""
    image = helper.make_tensor_value_info('image', TensorProto.UINT8, [1, 4, 4, 3])
    valid = helper.make_tensor_value_info('valid', TensorProto.FLOAT, [3])
    out = helper.make_tensor_value_info('y', TensorProto.FLOAT, None)
    half = numpy_helper.from_array(np.array(0.5, np.float32), 'half')
    shape = numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), 'shape')
    transpose_first = _graph([
        helper.make_node('Transpose', ['image'], ['t'], perm=[0, 3, 1, 2]),
        helper.make_node('Cast', ['t'], ['y'], to=TensorProto.FLOAT)], [image], [out])
    assert any('Transpose' in p and 'uint8' in p for p in tensorrt_type_violations(
        transpose_first))
    reshaped_bool = _graph([
        helper.make_node('Greater', ['valid', 'half'], ['gt']),
        helper.make_node('Reshape', ['gt', 'shape'], ['b']),
        helper.make_node('Where', ['b', 'half', 'half'], ['y'])], [valid], [out])
    reshaped_bool.graph.initializer.extend([half, shape])
    assert any('Reshape' in p and 'bool' in p for p in tensorrt_type_violations(reshaped_bool))
    safe = _graph([
        helper.make_node('Cast', ['image'], ['f'], to=TensorProto.FLOAT),
        helper.make_node('Transpose', ['f'], ['t'], perm=[0, 3, 1, 2]),
        helper.make_node('Reshape', ['valid', 'shape'], ['v']),
        helper.make_node('Greater', ['v', 'half'], ['b']),
        helper.make_node('Where', ['b', 't', 'half'], ['y'])], [image, valid], [out])
    safe.graph.initializer.extend([half, shape])
    assert tensorrt_type_violations(safe) == []


def _constants(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    found = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == 'Constant':
            for attr in node.attribute:
                if attr.name == 'value':
                    found[node.output[0]] = attr.t
    return found


@pytest.mark.slow
def test_denominator_guards_survive_float16(exported: Path) -> None:
    """Every lower bound of a Clip (the clamp_min in front of a division: L2 normalisation,
    propagation) is nonzero in float16, where TensorRT's FP16 kernels hold it."""
    model = onnx.load(str(exported))
    constants = _constants(model)
    bounds = {node.name: numpy_helper.to_array(constants[node.input[1]])
              for node in model.graph.node
              if node.op_type == 'Clip' and len(node.input) > 1 and node.input[1] in constants}
    assert len(bounds) >= 2  # the L2 normalisation and the propagation
    for name, bound in bounds.items():
        assert (bound.astype(np.float16) > 0).all(), f'{name}: {bound} is 0 in float16'


def _constants_through_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Emulate TensorRT running the float32 layers in float16: every float32 scalar constant
    rounded through float16 (1e-30 -> 0)."""
    for tensor in _constants(model).values():
        value = numpy_helper.to_array(tensor)
        if value.dtype == np.float32 and value.size == 1:
            tensor.CopyFrom(numpy_helper.from_array(
                value.astype(np.float16).astype(np.float32), tensor.name))
    return model


def _feeds(level: int, valid: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(level)
    protos = rng.normal(size=(K, 16)).astype(np.float32)
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    return {'image': np.full((1, H, W, 3), level, np.uint8), 'prototypes': protos,
            'prototype_costs': rng.uniform(0, 1, K).astype(np.float32),
            'prototype_valid': np.full(K, valid, np.float32),
            'temperature': np.array([0.1], np.float32)}


@pytest.mark.slow
@pytest.mark.parametrize('emulate_fp16_constants', [False, True])
def test_graph_is_finite_on_black_and_white_images(
        exported: Path, tmp_path: Path, emulate_fp16_constants: bool) -> None:
    """ONNX Runtime (CPU) on all-black and all-white images, with all and with no prototype
    valid: finite embedding, cost and confidence; the fp32 graph too, since TensorRT's FP16
    builder flag runs it in float16."""
    path = exported
    if emulate_fp16_constants:
        path = tmp_path / 'rounded.onnx'
        onnx.save(_constants_through_float16(onnx.load(str(exported))), str(path))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    for level in (0, 255):
        for valid in (1.0, 0.0):
            outputs = session.run(['embedding', 'cost', 'confidence'], _feeds(level, valid))
            for name, value in zip(('embedding', 'cost', 'confidence'), outputs, strict=True):
                assert np.isfinite(value).all(), (name, level, valid)
            if valid == 0.0:
                assert (outputs[1] == 0).all() and (outputs[2] == -1).all()

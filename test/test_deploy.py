"""The deployable graph: propagation against the numpy reference, the wrapper's contract, and
its ONNX export with ONNX Runtime parity (micro model)."""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrast_semask_ros import engine_spec
from contrast_semask_ros.backends import BackendOutputs
from contrast_semask_ros.propagation import propagate_cost
from contrast_semask_train.export import FORBIDDEN_OPS
from contrast_semask_train.model import INPUT_NAMES, DeployWrapper, build_model, propagate
from contrast_semask_train.model.deploy import DeployOutputs, DeployOutputsWithLogits


def test_graph_names_agree_with_the_runtime_constants() -> None:
    """model/deploy.py (torch only) spells the names that contrast_semask_ros.engine_spec
    defines: the forward's arguments are the inputs, the output tuples' fields the outputs."""
    assert INPUT_NAMES == engine_spec.INPUT_NAMES
    assert tuple(inspect.signature(DeployWrapper.forward).parameters)[1:] == INPUT_NAMES
    assert DeployOutputs._fields == engine_spec.OUTPUT_NAMES
    assert DeployOutputsWithLogits._fields == (*engine_spec.OUTPUT_NAMES, engine_spec.LOGITS_NAME)
    assert BackendOutputs._fields[:len(engine_spec.OUTPUT_NAMES)] == engine_spec.OUTPUT_NAMES


def _unit(x: np.ndarray, axis: int) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=axis, keepdims=True)).astype(np.float32)


def _banks(rng: np.random.Generator, D: int, emb: np.ndarray) -> dict[str, tuple]:
    """Named banks (prototypes (K, D), costs (K,), valid (K,)) covering the edge cases."""
    K = 6
    protos = _unit(rng.normal(size=(K, D)), 1)
    costs = rng.uniform(0, 1, K).astype(np.float32)
    dup = protos.copy()
    dup[1] = dup[0]  # duplicate prototypes with different costs
    # an invalid prototype equal to a pixel's embedding must not leak into cost or confidence
    trap = protos.copy()
    trap[2] = emb[:, 0, 0]
    return {
        'all valid': (protos, costs, np.ones(K, np.float32)),
        'none valid': (protos, costs, np.zeros(K, np.float32)),
        'one valid': (protos, costs, np.eye(K, dtype=np.float32)[3]),
        'duplicates': (dup, costs, np.ones(K, np.float32)),
        'invalid trap': (trap, costs, np.array([1, 1, 0, 1, 0, 1], np.float32)),
    }


@pytest.mark.parametrize('temperature', [0.5, 0.1, 0.005])
def test_graph_propagation_matches_numpy_reference(temperature: float) -> None:
    rng = np.random.default_rng(0)
    D, h, w = 16, 5, 7
    emb = _unit(rng.normal(size=(D, h, w)), 0)
    for name, (protos, costs, valid) in _banks(rng, D, emb).items():
        ref = propagate_cost(emb, protos, costs, valid, temperature)
        cost, conf = propagate(torch.from_numpy(emb)[None], torch.from_numpy(protos),
                               torch.from_numpy(costs), torch.from_numpy(valid),
                               torch.tensor([temperature]))
        assert torch.isfinite(cost).all() and torch.isfinite(conf).all(), name
        np.testing.assert_allclose(cost[0, 0].numpy(), ref.cost, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(conf[0, 0].numpy(), ref.confidence, atol=1e-6, err_msg=name)
        if name == 'none valid':
            assert (ref.cost == 0).all() and (ref.confidence == -1).all()
        if name == 'one valid':
            np.testing.assert_allclose(ref.cost, costs[3])
        if name == 'invalid trap':
            assert ref.confidence[0, 0] < 0.999  # the invalid exact match is ignored


def test_reference_propagation_is_the_weighted_formula() -> None:
    """Independent check of the reference on one pixel, straight from the definition."""
    e = _unit(np.array([[1.0], [0.5]]), 0).reshape(2, 1, 1)
    p = _unit(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), 1)
    c = np.array([0.1, 0.9, 0.4], np.float32)
    v = np.array([1, 1, 0], np.float32)
    sim = p @ e[:, 0, 0]
    wts = v * np.exp((sim - 1) / 0.2)
    ref = propagate_cost(e, p, c, v, 0.2)
    assert ref.cost[0, 0] == pytest.approx(float((wts * c).sum() / wts.sum()), rel=1e-5)
    assert ref.confidence[0, 0] == pytest.approx(float(sim[:2].max()), rel=1e-6)


def test_wrapper_normalises_inside_and_outputs_at_input_size() -> None:
    torch.manual_seed(0)
    model = build_model('micro', 4, 'contrastive').eval()
    wrapper = DeployWrapper(model, with_logits=True)
    image = torch.randint(0, 256, (1, 50, 70, 3), dtype=torch.uint8)
    D = model.config.embedding_dim
    protos = F.normalize(torch.randn(5, D), dim=1)
    costs, valid = torch.rand(5), torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0])
    with torch.no_grad():
        out = wrapper(image, protos, costs, valid, torch.tensor([0.1]))
        x = (image.permute(0, 3, 1, 2).float() - torch.tensor(model.config.mean).view(1, 3, 1, 1)
             ) / torch.tensor(model.config.std).view(1, 3, 1, 1)
        direct = model(x)
    assert wrapper.output_names == ('embedding', 'cost', 'confidence', 'logits')
    assert out.embedding.shape == (1, D, 13, 18) and out.cost.shape == (1, 1, 50, 70)
    assert out.confidence.shape == (1, 1, 50, 70) and out.logits.shape == (1, 4, 13, 18)
    torch.testing.assert_close(out.embedding, direct.embeddings)
    ref = propagate_cost(direct.embeddings[0].numpy(), protos.numpy(), costs.numpy(),
                         valid.numpy(), 0.1)
    up = F.interpolate(torch.from_numpy(ref.cost)[None, None], size=(50, 70), mode='bilinear',
                       align_corners=False)
    torch.testing.assert_close(out.cost, up, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_deploy_graph_exports_and_matches_onnxruntime(tmp_path: Path) -> None:
    onnx = pytest.importorskip('onnx', reason='onnx is an export extra: pip install .[export]')
    ort = pytest.importorskip('onnxruntime', reason='onnxruntime is an export extra')
    logging.getLogger('torch.onnx').setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = build_model('micro', 8, 'contrastive').eval()
    wrapper = DeployWrapper(model)
    K, D = 16, model.config.embedding_dim
    example = (torch.zeros(1, 64, 96, 3, dtype=torch.uint8), torch.zeros(K, D), torch.zeros(K),
               torch.zeros(K), torch.tensor([0.1]))
    program = torch.onnx.export(wrapper, example, dynamo=True, opset_version=18,
                                input_names=list(INPUT_NAMES),
                                output_names=list(wrapper.output_names))
    path = tmp_path / 'deploy.onnx'
    program.save(str(path), external_data=False)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    ops = Counter(node.op_type for node in graph.graph.node)
    assert not FORBIDDEN_OPS & ops.keys(), f'non-deployable ops: {FORBIDDEN_OPS & ops.keys()}'
    assert [i.name for i in graph.graph.input] == list(INPUT_NAMES)

    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    rng = np.random.default_rng(1)
    for valid in (np.ones(K), np.zeros(K), (rng.uniform(size=K) > 0.5)):
        feeds = {
            'image': rng.integers(0, 256, (1, 64, 96, 3), dtype=np.uint8),
            'prototypes': _unit(rng.normal(size=(K, D)), 1),
            'prototype_costs': rng.uniform(0, 1, K).astype(np.float32),
            'prototype_valid': valid.astype(np.float32),
            'temperature': np.array([0.1], np.float32),
        }
        onnx_out = session.run(None, feeds)
        with torch.no_grad():
            torch_out = wrapper(*(torch.from_numpy(feeds[n]) for n in INPUT_NAMES))
        for name, a, b in zip(wrapper.output_names, onnx_out, torch_out, strict=True):
            np.testing.assert_allclose(a, b.numpy(), atol=1e-4, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize('valid', [0.0, 1.0])
def test_propagation_in_float16_is_finite_without_valid_prototypes(valid: float) -> None:
    """TensorRT's FP16 builder flag may run the propagation in float16: its denominator guard
    must not round to 0 there (0 / 0 = NaN where no prototype is valid)."""
    torch.manual_seed(0)
    K, D = 6, 8
    embedding = F.normalize(torch.randn(1, D, 3, 4), dim=1).half()
    prototypes = F.normalize(torch.randn(K, D), dim=1).half()
    cost, confidence = propagate(embedding, prototypes, torch.rand(K).half(),
                                 torch.full((K,), valid).half(), torch.tensor([0.1]).half())
    assert torch.isfinite(cost).all() and torch.isfinite(confidence).all()
    if valid == 0.0:
        assert (cost == 0).all() and (confidence == -1).all()

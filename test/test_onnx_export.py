"""ONNX export smoke test: micro model through the dynamo exporter (opset 18), checked with
onnx.checker and compared with ONNX Runtime. The full deploy graph is tested in test_export."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from contrast_semask_train.export import FORBIDDEN_OPS
from contrast_semask_train.model import ModelOutputs, build_model

onnx = pytest.importorskip('onnx', reason='onnx is an export extra: pip install .[export]')
ort = pytest.importorskip('onnxruntime', reason='onnxruntime is an export extra')



@pytest.mark.slow
def test_micro_model_exports_and_matches_onnxruntime(tmp_path: Path) -> None:
    logging.getLogger('torch.onnx').setLevel(logging.ERROR)  # torchvision-not-installed noise
    torch.manual_seed(0)
    model = build_model('micro', num_classes=5).eval()
    for name, param in model.named_parameters():
        if name.endswith('gamma'):
            param.data.fill_(0.5)  # exercise the semantic-attention branch
    images = torch.randn(1, 3, 62, 90)  # odd stride-4 and window paddings in every stage
    program = torch.onnx.export(model, (images,), dynamo=True, opset_version=18,
                                input_names=['images'], output_names=list(ModelOutputs._fields))
    path = tmp_path / 'micro.onnx'
    program.save(str(path), external_data=False)

    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    assert graph.opset_import[0].version == 18
    ops = Counter(node.op_type for node in graph.graph.node)
    assert not FORBIDDEN_OPS & ops.keys(), f'non-deployable ops: {FORBIDDEN_OPS & ops.keys()}'

    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    onnx_out = dict(zip([o.name for o in session.get_outputs()],
                        session.run(None, {'images': images.numpy()}), strict=True))
    with torch.no_grad():
        torch_out = model(images)._asdict()
    assert onnx_out.keys() == torch_out.keys()
    for name, ref in torch_out.items():
        np.testing.assert_allclose(onnx_out[name], ref.numpy(), atol=1e-4, rtol=1e-4,
                                   err_msg=name)
    cosine = (onnx_out['embeddings'] * torch_out['embeddings'].numpy()).sum(axis=1)
    assert cosine.min() > 0.9999

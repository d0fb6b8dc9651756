"""contrast-semask-export onnx: files, EngineSpec, parity report, failures leave nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contrast_semask_ros import engine_spec
from contrast_semask_ros.engine_spec import EngineSpec, EngineSpecError, read_spec
from contrast_semask_train.model import INPUT_NAMES, build_model, save_checkpoint

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

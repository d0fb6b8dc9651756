"""Backends: ONNX Runtime and PyTorch agree on the deployable graph; validation; the ONNX path
runs with torch blocked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TextureModel

from contrast_semask_ros.backends import BackendError, Bank, open_backend
from contrast_semask_train.model import build_model, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip('onnxruntime', reason='onnxruntime is an export extra: pip install .[export]')


@pytest.fixture(scope='module')
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from contrast_semask_train.export import main

    root = tmp_path_factory.mktemp('backends')
    ckpt = save_checkpoint(root / 'm.pt', build_model('micro', 8, 'contrastive'))
    onnx_path = root / 'm.onnx'
    assert main(['onnx', str(ckpt), '--height', '48', '--width', '64', '--bank-size', '8',
                 '--out', str(onnx_path)]) == 0
    return ckpt, onnx_path


def _bank(rng: np.random.Generator, K: int, D: int = 16) -> Bank:
    protos = rng.normal(size=(K, D)).astype(np.float32)
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    return Bank(protos, rng.uniform(0, 1, K).astype(np.float32))


@pytest.mark.slow
def test_onnxruntime_and_torch_backends_agree(models: tuple[Path, Path]) -> None:
    ckpt, onnx_path = models
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    with open_backend(onnx_path) as ort_backend, \
            open_backend(ckpt, height=48, width=64, bank_size=8, device='cpu') as torch_backend:
        assert ort_backend.providers[-1] == 'CPUExecutionProvider'
        for bank in (_bank(rng, 3), _bank(rng, 8), Bank(np.zeros((0, 16), np.float32),
                                                       np.zeros(0, np.float32))):
            a = ort_backend.infer(image, bank, temperature=0.1)
            b = torch_backend.infer(image, bank, temperature=0.1)
            for name in ('embedding', 'cost', 'confidence'):
                np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-4,
                                           err_msg=name)
            assert a.cost.shape == (1, 1, 48, 64) and a.embedding.shape == (1, 16, 12, 16)
            assert a.infer_ms > 0
        empty = a  # the last bank had no prototype: cost 0, confidence -1
        assert (empty.cost == 0).all() and (empty.confidence == -1).all()


@pytest.mark.slow
def test_backends_fetch_outputs_by_the_spec_names(models: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    """A graph exported with logits has a fourth output; the backends still return the three
    required outputs by name, and feed the inputs by the spec's names."""
    from contrast_semask_train.export import main

    ckpt, onnx_path = models
    with_logits = tmp_path / 'logits.onnx'
    assert main(['onnx', str(ckpt), '--height', '48', '--width', '64', '--bank-size', '8',
                 '--logits', '--out', str(with_logits)]) == 0
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    bank = _bank(rng, 4)
    with open_backend(with_logits) as a, open_backend(onnx_path) as b:
        assert a.spec.output_names == ('embedding', 'cost', 'confidence', 'logits')
        assert a.spec.required_outputs == b.spec.outputs
        feeds = a._stage(image, bank, 0.1)
        assert tuple(feeds) == a.spec.input_names
        x, y = a.infer(image, bank, 0.1), b.infer(image, bank, 0.1)
        for name in ('embedding', 'cost', 'confidence'):
            np.testing.assert_allclose(getattr(x, name), getattr(y, name), atol=1e-6,
                                       err_msg=name)


@pytest.mark.slow
def test_backend_rejects_inputs_that_do_not_fit(models: tuple[Path, Path]) -> None:
    _, onnx_path = models
    rng = np.random.default_rng(0)
    with open_backend(onnx_path) as backend:
        with pytest.raises(BackendError, match=r'image must be uint8 \(48, 64, 3\)'):
            backend.infer(np.zeros((48, 65, 3), np.uint8), _bank(rng, 2), 0.1)
        with pytest.raises(BackendError, match='at most 8 prototypes'):
            backend.infer(np.zeros((48, 64, 3), np.uint8), _bank(rng, 9), 0.1)
        with pytest.raises(BackendError, match='temperature must be > 0'):
            backend.infer(np.zeros((48, 64, 3), np.uint8), _bank(rng, 2), 0.0)
    with pytest.raises(BackendError, match='cannot tell the backend'):
        open_backend(REPO / 'README.md')
    with pytest.raises(BackendError, match='not found'):
        open_backend(REPO / 'missing.onnx')


@pytest.mark.slow
def test_onnx_backend_runs_with_torch_blocked(models: tuple[Path, Path]) -> None:
    _, onnx_path = models
    code = '\n'.join([
        'import sys',
        f'sys.path.insert(0, {str(REPO)!r})',
        "for name in ('torch', 'contrast_semask_train', 'rclpy'):",
        '    sys.modules[name] = None',
        'import numpy as np',
        'from contrast_semask_ros.backends import Bank, open_backend',
        f'with open_backend({str(onnx_path)!r}) as b:',
        '    out = b.infer(np.zeros((48, 64, 3), np.uint8),',
        '                  Bank(np.eye(2, 16, dtype=np.float32), np.ones(2, np.float32)), 0.1)',
        'print(out.cost.shape)',
    ])
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '(1, 1, 48, 64)'


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.slow
def test_tensorrt_paths_without_tensorrt_say_what_to_install(models: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    if _has('tensorrt'):
        pytest.skip('tensorrt is installed: the missing-package messages cannot be checked')
    from contrast_semask_train.export import main

    _, onnx_path = models
    proc = subprocess.run(
        [sys.executable, '-m', 'contrast_semask_train.export', 'trt', str(onnx_path), '--out',
         str(tmp_path / 'm.engine')], capture_output=True, text=True, timeout=120, cwd=REPO)
    # exit 3: an environment problem (README, "Exit codes"), not bad input
    assert proc.returncode == 3 and 'install the `tensorrt` package' in proc.stderr
    assert not (tmp_path / 'm.engine').exists()
    assert main(['trt', str(tmp_path / 'missing.onnx'), '--out', str(tmp_path / 'x.engine')]) == 2
    # an engine file with a spec: the backend module imports, construction names the packages
    engine = tmp_path / 'm.engine'
    engine.write_bytes(b'not an engine')
    Path(f'{engine}.json').write_text(Path(f'{onnx_path}.json').read_text())
    with pytest.raises(BackendError, match='needs `tensorrt`'):
        open_backend(engine)


@pytest.mark.gpu
@pytest.mark.skipif(not (_has('tensorrt') and _has('pycuda')),
                    reason='needs TensorRT and pycuda with a CUDA GPU (not installable here)')
def test_tensorrt_engine_matches_onnxruntime(models: tuple[Path, Path], tmp_path: Path) -> None:
    from contrast_semask_train.tensorrt_build import build_engine

    _, onnx_path = models
    engine = build_engine(onnx_path, tmp_path / 'm.engine', fp16=False)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    bank = _bank(rng, 5)
    with open_backend(engine) as trt_backend, open_backend(onnx_path) as ort_backend:
        a, b = trt_backend.infer(image, bank, 0.1), ort_backend.infer(image, bank, 0.1)
        for name in ('embedding', 'cost', 'confidence'):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-3,
                                       err_msg=name)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.slow
@pytest.mark.parametrize('precision', ['fp16', 'bf16'])
def test_torch_half_precision_stays_close_to_fp32(models: tuple[Path, Path],
                                                  precision: str) -> None:
    """The half-precision policy (model/precision.py) runs on CPU too: same graph, small error."""
    ckpt, _ = models
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    bank = _bank(rng, 6)
    with open_backend(ckpt, height=48, width=64, bank_size=8, device='cpu') as ref, \
            open_backend(ckpt, height=48, width=64, bank_size=8, device='cpu',
                         precision=precision) as half:
        assert half.spec.precision == precision
        a, b = ref.infer(image, bank, 0.1), half.infer(image, bank, 0.1)
        for name in ('embedding', 'cost', 'confidence'):
            x, y = getattr(a, name).ravel(), getattr(b, name).ravel()
            assert getattr(b, name).dtype == np.float32
            assert x @ y / (np.linalg.norm(x) * np.linalg.norm(y)) > 0.999, name
        norms = np.linalg.norm(b.embedding, axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason='needs a CUDA GPU (torch sees none)')
@pytest.mark.parametrize('cuda_graph', [False, True])
def test_torch_cuda_backend_matches_cpu(models: tuple[Path, Path], cuda_graph: bool) -> None:
    ckpt, _ = models
    rng = np.random.default_rng(2)
    with open_backend(ckpt, height=48, width=64, bank_size=8, device='cpu') as cpu, \
            open_backend(ckpt, height=48, width=64, bank_size=8, device='cuda',
                         precision='fp16', cuda_graph=cuda_graph) as gpu:
        for _ in range(3):  # replays with new inputs, not the captured ones
            image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            bank = _bank(rng, int(rng.integers(1, 9)))
            a, b = cpu.infer(image, bank, 0.1), gpu.infer(image, bank, 0.1)
            for name in ('embedding', 'cost', 'confidence'):
                np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=2e-2,
                                           err_msg=name)


def test_embedding_out_receives_the_embedding(texture_model: TextureModel) -> None:
    """Backend.infer(embedding_out=...): the ONNX Runtime backend binds its output to the
    caller's array (no copy after the graph), with the same values as a plain run."""
    backend = open_backend(texture_model.onnx)
    spec = backend.spec
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (spec.height, spec.width, 3), dtype=np.uint8)
    protos = rng.normal(size=(3, spec.embedding_dim))
    bank = Bank((protos / np.linalg.norm(protos, axis=1, keepdims=True)).astype(np.float32),
                np.array([0.1, 0.5, 0.9], np.float32))
    plain = backend.infer(image, bank, 0.1)
    plain = [a.copy() for a in plain[:3]]
    out = np.full(spec.output('embedding').shape[1:], np.nan, np.float32)
    bound = backend.infer(image, bank, 0.1, embedding_out=out)
    assert np.shares_memory(bound.embedding, out)
    for a, b in zip(plain, bound[:3], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(BackendError, match='embedding_out must be'):
        backend.infer(image, bank, 0.1, embedding_out=np.zeros((2, 2), np.float32))

"""Exit codes and one-line errors of the training-side commands (README, "Exit codes"):
0 ok, 1 a parity/quality check failed, 2 bad usage or input, 3 the environment.

Every command answers a damaged checkpoint, ONNX file or EngineSpec with one line naming the
file, what is wrong and what to do, never a traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contrast_semask_ros.engine_spec import EngineSpec, spec_path
from contrast_semask_ros.exit_codes import EXIT_BAD_INPUT, EXIT_ENVIRONMENT
from contrast_semask_train.model import CheckpointError, build_model, save_checkpoint
from contrast_semask_train.model.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / 'config' / 'train' / 'micro_contrastive.yaml'


@pytest.fixture(scope='module')
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from contrast_semask_train.data import convert_ycor, write_synthetic_ycor

    root = tmp_path_factory.mktemp('synth')
    write_synthetic_ycor(root / 'raw', n=10, seed=3, height=68, width=128, valid_fraction=0.2,
                         progress=False)
    convert_ycor(root / 'raw', root / 'ycor', progress=False)
    return root / 'ycor'


def _damaged(tmp_path: Path, kind: str) -> Path:
    """A checkpoint file that is empty, truncated, random bytes or text."""
    path = tmp_path / f'{kind}.pt'
    if kind == 'zero':
        path.write_bytes(b'')
    elif kind == 'truncated':
        good = save_checkpoint(tmp_path / 'good.pt', build_model('micro', 8, 'contrastive'))
        data = good.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind == 'random':
        path.write_bytes(os.urandom(4096))
    else:
        path.write_text('hello, not a checkpoint')
    return path


def _error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize('kind', ['zero', 'truncated', 'random', 'text'])
def test_damaged_checkpoint_is_one_clear_error(tmp_path: Path, kind: str) -> None:
    path = _damaged(tmp_path, kind)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and '\n' not in message
    assert 'again' in message  # what to do
    assert '--trust-pickle' not in message  # no advice about an option the caller lacks


def test_trust_advice_names_the_callers_option(tmp_path: Path) -> None:
    import argparse

    path = tmp_path / 'mmcv.pth'
    torch.save({'meta': {'env': argparse.Namespace(cuda=True)}}, path)
    with pytest.raises(CheckpointError, match='pass --trust-pickle'):
        read_checkpoint(path, trust_option='--trust-pickle')
    with pytest.raises(CheckpointError, match='not a contrast_semask checkpoint'):
        read_checkpoint(path)  # eval/export/resume: our files never hold objects


@pytest.mark.parametrize('kind', ['zero', 'truncated', 'random'])
def test_every_command_answers_a_damaged_checkpoint_with_exit_2(
        tmp_path: Path, kind: str, synth_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    from contrast_semask_train import convert_checkpoint, evaluate, export, train

    bad = _damaged(tmp_path, kind)
    work = tmp_path / 'run'
    work.mkdir()
    (work / 'last.pt').write_bytes(bad.read_bytes())
    runs = {
        'eval': lambda: evaluate.main([str(bad), '--data', str(synth_data), '--device', 'cpu']),
        'export': lambda: export.main(['onnx', str(bad), '--height', '32', '--width', '32',
                                       '--out', str(tmp_path / 'm.onnx')]),
        'convert': lambda: convert_checkpoint.main([str(bad), '-o', str(tmp_path / 'c.pt'),
                                                    '--variant', 'micro']),
        'train': lambda: train.main(['--config', str(PRESET), '--data', str(synth_data),
                                     '--work-dir', str(work), '--resume', '--device=cpu',
                                     '--tensorboard=false', '--progress=false']),
    }
    for name, run in runs.items():
        caplog.clear()
        assert run() == EXIT_BAD_INPUT, name
        lines = _error_lines(caplog)
        assert len(lines) == 1 and '\n' not in lines[0], (name, lines)
        shown = work / 'last.pt' if name == 'train' else bad  # --resume reads last.pt
        assert str(shown) in lines[0], (name, lines)
    assert not (tmp_path / 'm.onnx').exists() and not (tmp_path / 'c.pt').exists()


def _fake_onnx(tmp_path: Path, spec_text: str | None = None) -> Path:
    """A file named .onnx with a valid spec beside it (recording the file's sha256)."""
    import dataclasses
    import hashlib

    onnx = tmp_path / 'm.onnx'
    onnx.write_bytes(b'not really onnx')
    spec = EngineSpec.build(height=32, width=32, bank_size=4, embedding_dim=16, stride=4,
                            mean=(0, 0, 0), std=(1, 1, 1), class_names=(),
                            checkpoint_sha256='0' * 64, precision='fp32', opset=18)
    sha = hashlib.sha256(onnx.read_bytes()).hexdigest()
    text = dataclasses.replace(spec, onnx_sha256=sha).to_json()
    spec_path(onnx).write_text(text if spec_text is None else spec_text)
    return onnx


@pytest.mark.parametrize('spec_text', ['', '[]', '{"format": "contrast_semask/engine-spec-1"',
                                       '{"format": "contrast_semask/engine-spec-1"}'])
def test_export_trt_answers_a_damaged_spec_with_one_line(
        tmp_path: Path, spec_text: str, caplog: pytest.LogCaptureFixture) -> None:
    from contrast_semask_train.export import main

    onnx = _fake_onnx(tmp_path, spec_text)
    assert main(['trt', str(onnx), '--out', str(tmp_path / 'm.engine')]) == EXIT_BAD_INPUT
    lines = _error_lines(caplog)
    assert len(lines) == 1 and '\n' not in lines[0] and str(spec_path(onnx)) in lines[0]
    assert not (tmp_path / 'm.engine').exists()


def test_export_trt_refuses_an_onnx_file_from_another_export(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from contrast_semask_train.export import main

    onnx = _fake_onnx(tmp_path)
    onnx.write_bytes(b'another export')  # the spec records the first file's sha256
    assert main(['trt', str(onnx), '--out', str(tmp_path / 'm.engine')]) == EXIT_BAD_INPUT
    assert 'different exports' in caplog.text
    missing = tmp_path / 'missing.onnx'
    assert main(['trt', str(missing), '--out', str(tmp_path / 'm.engine')]) == EXIT_BAD_INPUT
    assert f'ONNX file not found: {missing}' in caplog.text


def test_export_trt_without_tensorrt_is_an_environment_problem(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    try:
        import tensorrt  # noqa: F401
        pytest.skip('TensorRT is installed here')
    except ImportError:
        pass
    from contrast_semask_train.export import main

    onnx = _fake_onnx(tmp_path)
    assert main(['trt', str(onnx), '--out', str(tmp_path / 'm.engine')]) == EXIT_ENVIRONMENT
    assert 'TensorRT is not installed' in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_a_missing_gpu_is_exit_3(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from contrast_semask_train import evaluate, train

    ckpt = save_checkpoint(tmp_path / 'm.pt', build_model('micro', 8, 'contrastive'))
    assert evaluate.main([str(ckpt), '--data', str(tmp_path), '--device', 'cuda']) == 3
    assert 'CUDA is not available' in caplog.text
    data = tmp_path / 'data'
    data.mkdir()
    assert train.main(['--config', str(PRESET), '--data', str(data), '--work-dir',
                       str(tmp_path / 'w'), '--device=cuda']) == 3


def test_full_disk_names_the_path_and_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """ENOSPC while torch.save writes (simulated): exit 3, the path and the bytes needed,
    and no temp file left behind."""
    from semask_keys import semask_key_shapes, synthetic_semask_state

    from contrast_semask_train import convert_checkpoint
    from contrast_semask_train.model import checkpoint

    shapes = semask_key_shapes(16, (2, 2, 2, 2), (1, 2, 2, 4), 7, 8, 'vanilla', 32, 16)
    source = tmp_path / 'semask.pth'
    torch.save({'state_dict': synthetic_semask_state(shapes, 7, 0)}, source)

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(checkpoint.torch, 'save', no_space)
    out = tmp_path / 'out' / 'init.pt'
    assert convert_checkpoint.main([str(source), '-o', str(out), '--variant', 'micro']) == 3
    (line,) = _error_lines(caplog)
    assert str(out) in line and 'MiB' in line and 'no space left' in line
    assert list(out.parent.iterdir()) == []  # the temp file is gone

    def write_failed(*args: object, **kwargs: object) -> None:  # torch's own wording
        raise RuntimeError('[enforce fail at inline_container.cc:626] . unexpected pos 64 vs '
                           '0; PytorchStreamWriter failed writing file data/0: file write failed')

    monkeypatch.setattr(checkpoint.torch, 'save', write_failed)
    monkeypatch.setattr(checkpoint, '_free_bytes', lambda directory: 1000)
    with pytest.raises(checkpoint.DiskFullError, match=r'needs about [0-9.]+ MiB, 0.0 MiB free'):
        save_checkpoint(out, build_model('micro', 8, 'contrastive'))
    assert list(out.parent.iterdir()) == []


def test_atomic_writes_name_the_path_on_a_full_disk(tmp_path: Path) -> None:
    from contrast_semask_ros.atomic import DiskFullError, atomic_directory, atomic_path

    target = tmp_path / 'model.engine'
    with pytest.raises(DiskFullError, match=f'writing {target} .needs at least'):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b'x' * 100)
            raise OSError(errno.ENOSPC, 'No space left on device')
    with pytest.raises(DiskFullError) as info, atomic_directory(tmp_path / 'out') as tmp:
        raise OSError(errno.ENOSPC, 'No space left on device')
    assert info.value.errno == errno.ENOSPC and info.value.path == tmp_path / 'out'
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_export_onnx_on_a_full_disk_is_exit_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip('onnx')

    class Program:
        def save(self, path: str, external_data: bool = False) -> None:
            Path(path).write_bytes(b'partial')
            raise OSError(errno.ENOSPC, 'No space left on device')

    from contrast_semask_train import export

    monkeypatch.setattr(export.torch.onnx, 'export', lambda *a, **k: Program())
    ckpt = save_checkpoint(tmp_path / 'm.pt', build_model('micro', 8, 'contrastive'))
    out = tmp_path / 'models' / 'm.onnx'
    assert export.main(['onnx', str(ckpt), '--height', '32', '--width', '32', '--bank-size',
                        '4', '--out', str(out)]) == EXIT_ENVIRONMENT
    (line,) = _error_lines(caplog)
    assert str(out) in line and 'no space left' in line
    assert list(out.parent.iterdir()) == []


@pytest.mark.slow
def test_commands_print_one_line_and_no_traceback(tmp_path: Path) -> None:
    """The real processes: stderr holds one line for an empty checkpoint, exit code 2."""
    bad = _damaged(tmp_path, 'zero')
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'PYTHONWARNINGS': 'ignore'}
    commands = {
        'eval': ['contrast_semask_train.evaluate', str(bad), '--data', str(tmp_path),
                 '--device', 'cpu'],
        'export': ['contrast_semask_train.export', 'onnx', str(bad), '--height', '32',
                   '--width', '32', '--out', str(tmp_path / 'm.onnx')],
        'convert': ['contrast_semask_train.convert_checkpoint', str(bad), '-o',
                    str(tmp_path / 'c.pt')],
    }
    for name, args in commands.items():
        out = subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True,
                             cwd=REPO, env=env, timeout=120)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1, (name, out.stderr)
        assert str(bad) in lines[0] and 'Traceback' not in out.stderr, (name, out.stderr)

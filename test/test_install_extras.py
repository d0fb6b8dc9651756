"""`pip install .[replay]` into a clean venv, then the extra's documented commands (issue 14).

One venv, no torch: the package's wheel (built offline from a copy of the checkout) with the
`replay` extra, resolved by pip from setup.py's metadata as a user's `pip install .[replay]`
would. The versions are constrained to requirements/dev.txt, the ones the rest of the suite
tests, so pip takes them from its cache / this machine's wheel directory instead of downloading
(about 25 s on 2 cores here; without a cache it downloads some 150 MB from PyPI). In the venv:
`contrast-semask-data drive-bag --compressed`, `contrast-semask-replay` of an ONNX model from
the compressed topic with the installed params file, and `contrast-semask-export trt` up to
where TensorRT is needed. The ONNX model is exported in the test environment (it has torch).
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest
from test_package_static import build_wheel

REPO = Path(__file__).resolve().parents[1]
PACKAGE = 'contrast_semask_ros'


def _run(args: list[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.slow
def test_replay_extra_in_a_clean_venv_runs_its_commands(texture_model, tmp_path: Path):
    wheel = build_wheel(tmp_path / 'source', tmp_path / 'wheel')
    env_dir = tmp_path / 'venv'
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python, bin_dir = env_dir / 'bin' / 'python', env_dir / 'bin'
    proc = _run([python, '-m', 'pip', 'install', '--disable-pip-version-check',
                 '-c', REPO / 'requirements' / 'dev.txt', f'{wheel}[replay]'], tmp_path, 600)
    assert proc.returncode == 0, f'pip install failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}'
    # the extra must not drag in torch (nor the training stack)
    proc = _run([python, '-c', 'import importlib.util as u; print([m for m in ("torch", "onnx", '
                 '"onnxscript", "tensorboard") if u.find_spec(m)])'], tmp_path)
    assert proc.stdout.strip() == '[]', proc.stdout + proc.stderr

    work = tmp_path / 'work'  # not the checkout: only the installed package can be imported
    work.mkdir()
    proc = _run([bin_dir / 'contrast-semask-data', 'drive-bag', 'drive', '--frames', '12',
                 '--size', '96x128', '--seed', '1000', '--compressed', '--no-progress'], work)
    assert proc.returncode == 0, proc.stderr
    params = env_dir / 'share' / PACKAGE / 'config' / 'cost_map.yaml'  # installed data file
    assert params.is_file()
    proc = _run([bin_dir / 'contrast-semask-replay', 'drive', '--model', texture_model.onnx,
                 '--params', params, '--image-topic', '/camera/image_raw/compressed',
                 '--patch-cost-topic', '/traversal/patch_cost',
                 '--ground-truth-topic', '/ground_truth/cost', '--hold-out-every', '5',
                 '--out', 'replay'], work)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((work / 'replay' / 'report.json').read_text())
    assert report['params'] and report['config']

    # the engine builder needs no torch: in this venv it gets as far as needing TensorRT
    proc = _run([bin_dir / 'contrast-semask-export', 'trt', texture_model.onnx,
                 '--out', 'm.engine'], work)
    assert proc.returncode == 3 and 'TensorRT is not installed' in proc.stderr, proc.stderr
    assert 'torch' not in proc.stderr.replace('pytorch', '')

"""`pip install .[replay]` into a clean venv, then the extra's documented commands (issue 14).

One venv, no torch: the package's wheel (built offline from a copy of the checkout) with the
`replay` extra, resolved by pip from setup.py's metadata as a user's `pip install .[replay]`
would. The versions are constrained to requirements/dev.txt, the ones the rest of the suite
tests, so pip takes them from its cache / this machine's wheel directory instead of downloading
(about 25 s on 2 cores here; without a cache it downloads some 150 MB from PyPI). In the venv:
`contrast-semask-data drive-bag --compressed`, `contrast-semask-replay --supervision imu` of an
ONNX model from the compressed topic with the installed params file, and
`contrast-semask-export trt` up to where TensorRT is needed. The ONNX model is exported in the
test environment (it has torch).
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
                 '--supervision', 'imu',
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


@pytest.mark.slow
def test_train_export_supervision_dev_extras_in_a_clean_venv(texture_model, tmp_path: Path):
    """The other extras, in one more clean venv (torch comes from this machine's CPU wheel via
    the requirements/dev.txt pin): synthetic data and its conversion (train), an ONNX export
    of a checkpoint (export), the supervision core's geometry and IMU cost (supervision), and
    the linters (dev)."""
    wheel = build_wheel(tmp_path / 'source', tmp_path / 'wheel')
    env_dir = tmp_path / 'venv'
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python, bin_dir = env_dir / 'bin' / 'python', env_dir / 'bin'
    proc = _run([python, '-m', 'pip', 'install', '--disable-pip-version-check',
                 '-c', REPO / 'requirements' / 'dev.txt',
                 f'{wheel}[train,export,supervision,dev]'], tmp_path, 900)
    assert proc.returncode == 0, f'pip install failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}'
    work = tmp_path / 'work'
    work.mkdir()
    for command in (
            ['contrast-semask-data', 'synth', 'raw', '--n', '4', '--seed', '0', '--no-progress'],
            ['contrast-semask-data', 'convert-ycor', 'raw', 'ycor', '--no-progress'],
            ['contrast-semask-export', 'onnx', texture_model.checkpoint, '--height', '64',
             '--width', '96', '--bank-size', '16', '--out', 'm.onnx'],
            ['ruff', '--version']):
        proc = _run([bin_dir / command[0], *command[1:]], work, 600)
        assert proc.returncode == 0, f'{command}: {proc.stderr[-3000:]}'
    assert (work / 'ycor' / 'manifest.json').is_file() and (work / 'm.onnx').is_file()
    code = ('import numpy as np\n'
            'from contrast_semask_ros.supervision import geometry, traversal\n'
            't = np.arange(0, 2, 1 / 200)\n'
            'imu = traversal.ImuTraversalCost()\n'
            'for s, z in zip(t, 9.81 + np.sin(2 * np.pi * 10 * t)):\n'
            '    imu.add(int(s * 1e9), np.array([0.0, 0.0, z]))\n'
            'print(round(imu.power_at(int(1.9e9)).power, 2))\n'
            'print(geometry.pose_from_xyz_rpy([1, 2, 3], [0, 0, 0])[:3, 3].tolist())\n')
    proc = _run([python, '-c', code], work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ['0.5', '[1.0,', '2.0,', '3.0]']  # A²/2 for A = 1

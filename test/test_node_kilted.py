"""The node on a second ROS 2 distro: Kilted's rclpy 9.1.2 / Fast DDS 3 wheels (.venv-kilted,
made by `make setup-kilted`, which `make test` runs), alone and talking to a Jazzy probe.
Sealed in a private network namespace like every DDS test."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import TextureModel
from ros_harness import require_sealed_dds, run_sealed, skip_or_fail

pytestmark = [pytest.mark.ros, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
KILTED = REPO / '.venv-kilted' / 'bin'
if not (KILTED / 'cost_map_node').is_file():
    skip_or_fail('no .venv-kilted: run `make setup-kilted` (make test does)', module_level=True)
require_sealed_dds(module_level=True)


def _drive(python: Path | str, model: Path, out_dir: Path, domain_id: int,
           *extra: str) -> dict[str, Any]:
    out = out_dir / 'main.json'
    proc = run_sealed([str(python), str(REPO / 'test' / 'ros_driver.py'), 'main', '--model',
                       str(model), '--out', str(out), '--node-arg=-p',
                       f'--node-arg=bank_save_path:={out_dir / "bank.npz"}', *extra],
                      timeout=240, domain_id=domain_id, cwd=out_dir)
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-6000:]
    return json.loads(out.read_text())


def _check(run: dict[str, Any]) -> None:
    first = run['first']
    assert first['cost']['encoding'] == '32FC1' and first['cost']['height'] == 120
    assert first['embedding']['encoding'] == '32FC32'
    grass, brick, unknown = run['after_patch']
    assert abs(grass - 0.2) < 0.05 and abs(brick - 0.9) < 0.05 and unknown < 0.5
    assert not run['set_bad_temperature']['successful']
    assert run['diagnostics']['frames_rejected'] >= 2
    assert run['exit_code'] == 0, run['node_log']


def test_kilted_node_with_a_kilted_probe(texture_model: TextureModel, tmp_path: Path) -> None:
    run = _drive(KILTED / 'python', texture_model.onnx, tmp_path, 45)
    _check(run)
    assert run['probe_rclpy'].startswith('9.')  # Kilted


def test_kilted_node_with_a_jazzy_probe(texture_model: TextureModel, tmp_path: Path) -> None:
    run = _drive(sys.executable, texture_model.onnx, tmp_path, 46,
                 f'--node-exe={KILTED / "cost_map_node"}')
    _check(run)
    assert run['probe_rclpy'].startswith('7.')  # Jazzy

"""cost_map_node as a real subprocess (real rclpy + Fast DDS from the ros-jazzy wheels), driven by
a real rclpy probe node (ros_driver.py). Every run is sealed in a private network namespace
(ros_harness.py): no DDS packet leaves loopback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import TextureModel
from ros_harness import require_sealed_dds, run_sealed

pytestmark = [pytest.mark.ros, pytest.mark.slow]
require_sealed_dds(module_level=True)  # skips here without a namespace; fails under CI=true

HERE = Path(__file__).resolve().parent
H, W = 120, 200


def _drive(scenario: str, model: Path, out_dir: Path, *extra: str,
           domain_id: int) -> dict[str, Any]:
    out = out_dir / f'{scenario}.json'
    proc = run_sealed([sys.executable, str(HERE / 'ros_driver.py'), scenario, '--model',
                       str(model), '--out', str(out), *extra], timeout=240,
                      domain_id=domain_id, cwd=out_dir)
    assert proc.returncode == 0 and out.is_file(), (
        f'driver failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}')
    return json.loads(out.read_text())


@pytest.fixture(scope='module')
def main_run(texture_model: TextureModel, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, Any]:
    root = tmp_path_factory.mktemp('node_main')
    return _drive('main', texture_model.onnx, root, '--node-arg=-p',
                  f'--node-arg=bank_save_path:={root / "bank.npz"}', domain_id=41) | {
                      'root': str(root)}


def test_outputs_carry_the_input_header_encoding_and_size(main_run: dict[str, Any]) -> None:
    sent = set(main_run['sent_stamps'])
    for topic, (encoding, height, width) in {
            'cost': ('32FC1', H, W), 'confidence': ('32FC1', H, W),
            'embedding': ('32FC32', 24, 32), 'cost_overlay': ('rgb8', H, W),
            'embedding_viz': ('rgb8', 24, 32)}.items():  # stride 4 of the 96x128 engine
        first = main_run['first'][topic]
        assert (first['encoding'], first['height'], first['width']) == (encoding, height,
                                                                       width), topic
        assert first['sec'] in sent and first['frame_id'] == 'camera_optical', topic
    for msgs in main_run['received'].values():
        assert all(m['frame_id'] == 'camera_optical' and m['nanosec'] == 0 for m in msgs)


def test_cost_converges_to_the_measured_patch_cost(main_run: dict[str, Any]) -> None:
    assert main_run['before_patch'][2] == 1.0  # empty bank: everything unknown (NaN)
    grass, brick, unknown = main_run['after_patch']
    assert abs(grass - 0.2) < 0.05 and abs(brick - 0.9) < 0.05 and unknown < 0.5


def test_parameters_change_at_run_time_only_when_valid(main_run: dict[str, Any]) -> None:
    assert main_run['set_temperature']['successful']
    assert not main_run['set_bad_temperature']['successful']
    assert 'temperature' in main_run['set_bad_temperature']['reason']
    assert not main_run['set_bank_size']['successful']  # read-only
    assert main_run['params_now'] == {'temperature': 0.05, 'bank_size': 32}


def test_bad_inputs_are_survived_and_counted(main_run: dict[str, Any]) -> None:
    diag = main_run['diagnostics']
    assert diag['frames_rejected'] >= 2  # short data, 32FC1 on the camera topic
    assert diag['size_changes'] >= 1
    assert diag['patches_rejected'] >= 1  # an rgb8 "mask"
    assert diag['patches_miss'] >= 2  # evicted and future frames
    assert diag['patch_regions_invalid'] >= 1  # infinite cost
    assert diag['patches_empty'] >= 2  # all-NaN mask, the infinite one
    assert diag['patches_in'] >= 16 and diag['frames_out'] >= 5
    assert diag['bank_size'] == 0  # ~/reset_bank (called just before) emptied it
    assert 0 < diag['infer_ms median'] < 5000 and diag['frames_out'] <= diag['frames_in']
    # still learning and publishing afterwards, with the camera's header
    grass, brick, _ = main_run['after_bad_inputs']
    assert abs(grass - 0.2) < 0.1 and abs(brick - 0.9) < 0.1
    assert main_run['last_cost']['height'] == H
    assert main_run['services'] == {'save_bank': True, 'reset_bank': True}
    assert (Path(main_run['root']) / 'bank.npz').is_file()


def test_sigint_exits_cleanly(main_run: dict[str, Any]) -> None:
    assert main_run['exit_code'] == 0 and not main_run.get('sigint_timeout'), \
        main_run['node_log']
    assert 'Traceback' not in main_run['node_log']
    assert 'context is invalid' not in main_run['node_log']  # stopped before rclpy shut down


def test_params_file_p_overrides_namespace_and_compressed_input(
        texture_model: TextureModel, tmp_path: Path) -> None:
    params = tmp_path / 'params.yaml'
    params.write_text('/**:\n  ros__parameters:\n    publish_embedding: false\n'
                      '    min_confidence: 0.3\n    image_transport: compressed\n'
                      '    bank_size: 16\n    temperature: 0.5\n')
    run = _drive('params', texture_model.onnx, tmp_path, '--ns', '/robot1', '--compressed',
                 '--node-arg=--params-file', f'--node-arg={params}', domain_id=42)
    # the file applies under the /robot1 namespace (keyed /**:); a -p given after it wins
    assert run['params'] == {'temperature': 0.2, 'min_confidence': 0.3,
                             'publish_embedding': False, 'image_transport': 'compressed',
                             'bank_size': 16}
    assert run['embedding_messages'] == 0
    assert (run['cost']['height'], run['cost']['width'], run['cost']['encoding']) == (
        H, W, '32FC1')
    assert run['exit_code'] == 0


def test_bad_parameters_refuse_to_start_with_a_clear_message(
        texture_model: TextureModel, tmp_path: Path) -> None:
    run = _drive('bad_start', texture_model.onnx, tmp_path, domain_id=43)
    expected = {'missing_model': 'is not a file', 'size_mismatch': 'was built for 128x96',
                'bank_too_large': 'bank_size=4096 but the model was exported with bank size '
                                  '(Kmax) 32: set bank_size to 0'}
    for case, text in expected.items():
        assert run[case]['exit_code'] == 2, run[case]['log']  # bad input (README, Exit codes)
        assert text in run[case]['log'], run[case]['log']
        assert 'Traceback' not in run[case]['log']


def test_an_incompatible_camera_qos_is_reported_not_silent(texture_model: TextureModel,
                                                           tmp_path: Path) -> None:
    run = _drive('qos', texture_model.onnx, tmp_path, domain_id=47)
    assert run['costs'] == 0 and run['diagnostics']['image_qos_incompatible'] >= 1
    assert 'set image_reliability: best_effort' in run['node_log']
    assert run['exit_code'] == 0


def test_lifecycle_node_publishes_only_while_active(texture_model: TextureModel,
                                                    tmp_path: Path) -> None:
    run = _drive('lifecycle', texture_model.onnx, tmp_path, domain_id=49)
    assert run['initial'] == 'unconfigured' and run['costs_unconfigured'] == 0
    assert run['configure'] and run['after_configure'] == 'inactive'
    assert run['costs_inactive'] == 0
    assert run['activate'] and run['after_activate'] == 'active'
    assert run['deactivate'] and run['costs_deactivated'] == 0
    assert run['cleanup'] and run['after_cleanup'] == 'unconfigured'
    assert run['configure_again'] and run['activate_again'] and run['costs_again'] >= 2
    assert run['exit_code'] == 0 and 'Traceback' not in run['node_log'], run['node_log']


def test_hostile_inputs_that_did_harm_are_refused_and_learning_goes_on(
        texture_model: TextureModel, tmp_path: Path) -> None:
    run = _drive('hostile', texture_model.onnx, tmp_path, domain_id=50)
    assert run['exit_code'] == 0 and 'Traceback' not in run['node_log'], run['node_log']
    for name, answer in run['bad_loads'].items():  # answered, not a dead node
        assert not answer['success'], name
    assert 'embedding_dim must be a 0-d integer' in run['bad_loads']['dim_array']['message']
    assert 'costs must be a 1-d number' in run['bad_loads']['costs_string']['message']
    assert 'non-finite costs' in run['bad_loads']['costs_huge']['message']
    assert 'single array (.npy)' in run['bad_loads']['plain_npy']['message']
    bad = run['bad_params']
    assert not bad['temperature_tiny']['successful'] and '0.005' in bad['temperature_tiny'][
        'reason']
    assert not bad['overlay_inf']['successful'] and 'finite' in bad['overlay_inf']['reason']
    assert not bad['cost_range_bad']['successful']
    diag = run['diagnostics']
    assert diag['stamp_jumps'] >= 2  # the far-future stamp, then back; and back to 20
    assert diag['patches_rejected'] >= 1  # the (H, W + 1) mask
    assert diag['frames_too_large'] >= 1 and diag['frames_rejected'] >= 1  # 16000², 0 x W
    assert diag['patch_regions_invalid'] >= 3  # 5.0 and -3.0 outside [0, 1], 1e300 inf
    grass, brick, _ = run['after']  # learning after the jumps: the last patch's costs
    assert abs(brick - 0.8) < 0.1 and abs(grass - 0.3) < 0.15
    assert run['good_load']['saved'] and run['good_load']['success'], run['good_load']
    assert 'loaded' in run['good_load']['message']

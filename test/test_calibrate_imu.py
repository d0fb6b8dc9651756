"""contrast-semask-calibrate-imu (contrast_semask_ros/calibrate_imu.py) on a simulated drive:
percentiles, the parameter file it writes, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bag_messages import write_sim_drive

from contrast_semask_ros.calibrate_imu import main
from contrast_semask_ros.supervision.params import TABLE


@pytest.fixture(scope='module')
def drive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip('rosbags', reason='reads bags with rosbags')
    return write_sim_drive(tmp_path_factory.mktemp('calib'), 150, '24x40', seed=3)


def test_percentiles_and_the_parameter_file(drive: Path, tmp_path: Path) -> None:
    assert main([str(drive), '--json', str(tmp_path / 'c.json'),
                 '--write-params', str(tmp_path / 'c.yaml')]) == 0
    result = json.loads((tmp_path / 'c.json').read_text())
    percentiles = [result[f'p{q}'] for q in (5, 25, 50, 75, 95)]
    assert np.all(np.diff(percentiles) > 0)
    # the drive crosses smooth trail (0.15 m/s^2 of vibration) to low vegetation (~2.5 m/s^2):
    # band power (5-25 Hz noise, all in the 1-30 Hz band) spans those squared
    assert 0.01 < result['p5'] < 0.5 and 2.0 < result['p95'] < 12.0
    assert result['n'] > 200 and result['nonfinite'] < 0.1 * result['n']
    values = TABLE.read_params_file(tmp_path / 'c.yaml')
    assert values == {'power_at_cost_0': pytest.approx(result['p5'], rel=1e-5),
                      'power_at_cost_1': pytest.approx(result['p95'], rel=1e-5)}
    TABLE.resolve(values)  # valid for the node and replay


def test_bad_topic_or_window_is_exit_2(drive: Path, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    assert main([str(drive), '--imu-topic', '/imu/raw']) == 2
    assert "no IMU topic '/imu/raw'" in caplog.text and '/imu/data' in caplog.text
    assert main([str(drive), '--every-s', '0']) == 2
    assert main([str(drive), '--f-low', '40', '--f-high', '30']) == 2
    assert 'need 0 <= f_low < f_high' in caplog.text
    assert main([str(drive), '--f-low', '150', '--f-high', '200']) == 2  # > 100 Hz Nyquist
    assert 'no finite band power' in caplog.text

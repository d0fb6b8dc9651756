#!/usr/bin/env python3
"""CPU time of the patch_cost node's work: per IMU message and per label update.

Runs what the node runs for each message — the ros_io conversion of a sensor_msgs/Imu-shaped
message, Supervisor.add_imu and Supervisor.update — on a straight 1 m/s drive (IMU 200 Hz,
odometry 50 Hz, camera 10 Hz, keyframes announced every 0.2 m as the cost node does), and times
each IMU message: those that make a label update (footprint projected into every keyframe that
saw it, masks built) and those that do not. The ROS publish is not included (rclpy's
serialisation of the masks: see bench/RESULTS.md, node overhead, for its cost per MB).
    PYTHONPATH=. .venv/bin/python bench/bench_supervision.py --sizes 272x512 544x1024
Prints a markdown row per camera size and mask_scale.
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from types import SimpleNamespace

import numpy as np

from contrast_semask_ros.supervision import ros_io
from contrast_semask_ros.supervision.geometry import (
    PLUMB_BOB,
    CameraModel,
    camera_pose_to_optical,
    pose_from_xyz_rpy,
)
from contrast_semask_ros.supervision.supervisor import SupervisionConfig, Supervisor

_logger = logging.getLogger('bench_supervision')
NS = 1_000_000_000


def _imu_message(stamp: int, az: float) -> SimpleNamespace:
    sec, nanosec = divmod(stamp, NS)
    vector = SimpleNamespace(x=0.0, y=0.0, z=az)
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=sec,
                                                                        nanosec=nanosec)),
                           linear_acceleration=vector,
                           orientation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0),
                           orientation_covariance=[0.0] * 9)


def run(height: int, width: int, mask_scale: int, seconds: float, seed: int = 0
        ) -> dict[str, float]:
    """Median / p95 ms per IMU message without and with a label update, labels per update."""
    f = width / 2  # 90 degrees horizontal field of view
    camera = CameraModel(width, height, np.array([[f, 0, (width - 1) / 2],
                                                  [0, f, (height - 1) / 2], [0, 0, 1.0]]),
                         np.zeros(5), PLUMB_BOB)
    supervisor = Supervisor(SupervisionConfig(mask_scale=mask_scale),
                            camera_pose_to_optical(0.3, 0.0, 1.0, 0.0, 0.35, 0.0))
    rng = np.random.default_rng(seed)
    plain, labelling, labels = [], [], []
    last_key_x = -1.0
    for k in range(int(seconds * 200)):
        t = k * NS // 200
        x = k / 200
        if k % 4 == 0:
            supervisor.add_odometry(t, pose_from_xyz_rpy((x, 0, 0), (0, 0, 0)), 1.0)
        if k % 20 == 0 and x - last_key_x >= 0.2 - 1e-9:
            supervisor.add_frame(t, camera, announced=True)
            last_key_x = x
        msg = _imu_message(t, 9.81 + (0.3 if x < 10 else 2.0) * rng.standard_normal())
        start = time.perf_counter()
        stamp, acceleration, orientation = ros_io.imu_sample(msg)
        supervisor.add_imu(stamp, acceleration, orientation)
        update = supervisor.update(stamp)
        ms = (time.perf_counter() - start) * 1e3
        if update is None:
            plain.append(ms)
        elif update.labels:
            labelling.append(ms)
            labels.append(len(update.labels))
    return {'imu_median': float(np.median(plain)), 'imu_p95': float(np.percentile(plain, 95)),
            'update_median': float(np.median(labelling)),
            'update_p95': float(np.percentile(labelling, 95)),
            'labels_per_update': float(np.median(labels)), 'updates': len(labelling)}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', nargs='+', default=['272x512', '544x1024'])
    parser.add_argument('--mask-scales', nargs='+', type=int, default=[1, 4])
    parser.add_argument('--seconds', type=float, default=20.0)
    args = parser.parse_args()
    _logger.info('%s, %s, numpy %s', platform.processor() or platform.machine(),
                 platform.python_version(), np.__version__)
    _logger.info('| camera | mask_scale | IMU msg, no update: median / p95 ms | label update: '
                 'median / p95 ms | labels per update | updates |')
    _logger.info('|---|---|---|---|---|---|')
    for size in args.sizes:
        height, width = (int(v) for v in size.split('x'))
        for scale in args.mask_scales:
            r = run(height, width, scale, args.seconds)
            _logger.info('| %dx%d | %d | %.3f / %.3f | %.2f / %.2f | %.0f | %d |', height, width,
                         scale, r['imu_median'], r['imu_p95'], r['update_median'],
                         r['update_p95'], r['labels_per_update'], r['updates'])


if __name__ == '__main__':
    main()

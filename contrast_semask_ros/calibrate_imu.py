"""`contrast-semask-calibrate-imu`: percentiles of IMU vibration band power over a bag, to set
the patch_cost node's `power_at_cost_0` and `power_at_cost_1`.

    contrast-semask-calibrate-imu drive_bag --imu-topic /imu/data [--window-s 1 --every-s 0.1]

Drive the robot over the terrain it will meet (smooth road to the roughest ground it should
still cross), record the IMU, and run this on the bag: it computes the band power of every
window (the same `ImuTraversalCost` the node uses, so the same band, window and gravity
removal), prints the 5th to 95th percentiles and a parameter block to paste into
config/patch_cost.yaml (power_at_cost_0 = p5, power_at_cost_1 = p95: the smoothest 5 % of the
drive costs 0, the roughest 5 % costs 1). `--json FILE` also writes them, `--write-params
FILE.yaml` a parameter file with the two values (for patch_cost_node, after
config/patch_cost.yaml, and for replay's --supervision-params). Exit codes: 0 ok; 2 a
bag or topic that cannot be read, or no valid window; 3 rosbags missing.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contrast_semask_ros import bagio
from contrast_semask_ros.atomic import atomic_write_text
from contrast_semask_ros.exit_codes import EXIT_OK, fail
from contrast_semask_ros.supervision import ros_io
from contrast_semask_ros.supervision.traversal import ImuTraversalCost, calibrate

_logger = logging.getLogger('contrast_semask_calibrate_imu')
IMU_TYPES = ('sensor_msgs/msg/Imu', 'sensor_msgs/Imu')


def band_powers(bag: Path, imu_topic: str, every_s: float, **imu_options: Any
                ) -> tuple[list[float], dict[str, int]]:
    """The band power of a window every `every_s` seconds of IMU time over the bag, and the
    IMU counters (dropped samples, invalid windows by reason)."""
    if not every_s > 0:
        raise ValueError(f'--every-s must be > 0 seconds, got {every_s}')
    imu = ImuTraversalCost(**imu_options)
    every_ns = int(every_s * 1e9)
    powers: list[float] = []
    next_ns: int | None = None
    with bagio.InputBag(bag) as reader:
        connections = reader.connections(imu_topic, 'IMU', IMU_TYPES)
        for conn, _, raw in reader.messages(connections):
            msg = reader.decode(raw, conn)
            if msg is None:
                imu.counters['undecodable'] += 1
                continue
            stamp, acceleration, orientation = ros_io.imu_sample(msg)
            if not imu.add(stamp, acceleration, orientation):
                continue
            if next_ns is None or stamp >= next_ns or stamp < next_ns - 10 * every_ns:
                next_ns = stamp + every_ns
                band = imu.power_at(stamp)
                powers.append(band.power)
    return powers, dict(imu.counters)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='contrast-semask-calibrate-imu', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bag', type=Path, help='rosbag2 directory, .mcap/.db3 or ROS 1 .bag')
    parser.add_argument('--imu-topic', default='/imu/data', help='sensor_msgs/Imu')
    parser.add_argument('--every-s', type=float, default=0.1, help='one window per this IMU time')
    parser.add_argument('--window-s', type=float, default=1.0, help='as imu_window_s')
    parser.add_argument('--f-low', type=float, default=1.0, help='as imu_f_low (Hz)')
    parser.add_argument('--f-high', type=float, default=30.0, help='as imu_f_high (Hz)')
    parser.add_argument('--json', type=Path, default=None, help='also write the numbers here')
    parser.add_argument('--write-params', type=Path, default=None, metavar='YAML',
                        help='also write power_at_cost_0/1 as a ROS 2 parameter file for '
                        'patch_cost_node (--params-file after config/patch_cost.yaml) and '
                        'contrast-semask-replay --supervision-params')
    return parser


def params_file_text(result: dict[str, Any], source: Path) -> str:
    """A ROS 2 parameter file setting power_at_cost_0 = p5 and power_at_cost_1 = p95."""
    return (f'# contrast-semask-calibrate-imu {source}: band power p5 and p95 over '
            f'{result["n"]} windows\n'
            '/**:\n  ros__parameters:\n'
            f'    power_at_cost_0: {result["power_at_cost_0"]:.6g}\n'
            f'    power_at_cost_1: {result["power_at_cost_1"]:.6g}\n')


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        powers, counters = band_powers(args.bag, args.imu_topic, args.every_s,
                                       window_s=args.window_s, f_low=args.f_low,
                                       f_high=args.f_high,
                                       history_s=max(3.0, 2 * args.window_s))
        result = calibrate(powers)
    except (bagio.BagError, ValueError, OSError, ImportError) as err:
        return fail(_logger, err)
    result['counters'] = counters
    lines = [f'band power ({args.f_low:g}-{args.f_high:g} Hz, {args.window_s:g} s windows) over '
             f'{result["n"]} windows of {args.bag} ({result["nonfinite"]} invalid):']
    lines += [f'  p{q}: {result[f"p{q}"]:.4g} (m/s^2)^2' for q in (5, 25, 50, 75, 95)]
    lines += ['for config/patch_cost.yaml:',
              f'    power_at_cost_0: {result["power_at_cost_0"]:.4g}',
              f'    power_at_cost_1: {result["power_at_cost_1"]:.4g}']
    _logger.info('%s', '\n'.join(lines))
    try:
        if args.json:
            atomic_write_text(args.json, json.dumps(result, indent=2))
        if args.write_params:
            atomic_write_text(args.write_params, params_file_text(result, args.bag))
    except OSError as err:
        return fail(_logger, err)
    return EXIT_OK


if __name__ == '__main__':
    raise SystemExit(main())

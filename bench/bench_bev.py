#!/usr/bin/env python3
"""BEV accuracy of the rolling cost grid over several simulated drives (issue 16's numbers).

For each seed: `contrast-semask-data drive-bag` (the raw-sensor drive, 120 frames at 272x512),
then `contrast-semask-replay --supervision imu --grid` with the given model and IMU calibration
(what `make demo` does for seed 1000), and one row of its report:

    image   ground_truth.mae: the cost images' per-pixel error (all frames)
    bev     bev.cost_mae: the cells each frame observed, as fused in the grid
    frame   bev.frame_cost_mae: the same cells, the frame's points alone (no weighting, memory)
    points  bev.image_cost_mae: the points fused into the grid, their own cost
    window  bev.window_cost_mae: every known cell of every grid (memory included)
    recall, false high: bev.high_cost_recall and bev.false_high_rate (threshold 0.5), observed
            cells

bev - frame is what the grid's fusion changes; frame - points is weighing cells (ground area)
instead of pixels, i.e. the model's error away from the near ground.

    PYTHONPATH=. .venv/bin/python bench/bench_bev.py --model runs/demo/model.onnx \\
        --calibration runs/demo/imu_calibration.yaml --seeds 1000 1001 1002 1003 1004
Prints markdown rows with the hardware; copy them to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

_logger = logging.getLogger('bench_bev')

COLUMNS = ('image', 'bev', 'frame', 'points', 'window', 'recall', 'false high', 'm^2')


def run_seed(seed: int, model: Path, calibration: Path, work: Path, frames: int,
             size: str) -> dict[str, Any]:
    """One drive and its supervised replay; the report's numbers (COLUMNS)."""
    from contrast_semask_ros.replay import main as replay_main
    from contrast_semask_train.data.cli import main as data_main

    bag, out = work / f'drive_{seed}', work / f'replay_{seed}'
    if data_main(['drive-bag', str(bag), '--frames', str(frames), '--size', size, '--seed',
                  str(seed), '--no-progress']) != 0:
        raise RuntimeError(f'drive-bag failed for seed {seed}')
    if replay_main([str(bag), '--model', str(model), '--params', 'config/cost_map.yaml',
                    '--image-topic', '/camera/image_raw', '--supervision', 'imu',
                    '--supervision-params', str(calibration), '--ground-truth-topic',
                    '/ground_truth/cost', '--hold-out-every', '5', '--no-progress',
                    '--out', str(out)]) != 0:
        raise RuntimeError(f'replay failed for seed {seed}')
    report = json.loads((out / 'report.json').read_text())
    bev = report['bev']
    return {'image': report['ground_truth']['mae'], 'bev': bev['cost_mae'],
            'frame': bev['frame_cost_mae'], 'points': bev['image_cost_mae'],
            'window': bev['window_cost_mae'], 'recall': bev['high_cost_recall'],
            'false high': bev['false_high_rate'], 'm^2': bev['coverage_m2'],
            'spearman': report['supervision']['spearman_vs_truth']}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', type=Path, required=True, help='an ONNX model (make demo)')
    parser.add_argument('--calibration', type=Path, required=True,
                        help='the IMU calibration (contrast-semask-calibrate-imu --write-params)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[1000, 1001, 1002, 1003, 1004])
    parser.add_argument('--frames', type=int, default=120)
    parser.add_argument('--size', default='272x512')
    args = parser.parse_args()
    from bench_world import hardware

    _logger.info('hardware: %s', hardware())
    _logger.info('command: PYTHONPATH=. .venv/bin/python bench/bench_bev.py %s',
                 shlex.join(sys.argv[1:]))
    _logger.info('| seed | %s | bev - image | bev - frame | Spearman |', ' | '.join(COLUMNS))
    _logger.info('|---|%s---|---|---|', '---|' * len(COLUMNS))
    logging.getLogger('contrast_semask_replay').setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            row = run_seed(seed, args.model, args.calibration, Path(work), args.frames,
                           args.size)
            cells = ' | '.join(f'{row[c]:.0f}' if c == 'm^2' else f'{row[c]:.3f}'
                               for c in COLUMNS)
            _logger.info('| %d | %s | %+.3f | %+.3f | %.3f |', seed, cells,
                         row['bev'] - row['image'], row['bev'] - row['frame'], row['spearman'])


if __name__ == '__main__':
    main()

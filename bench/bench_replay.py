#!/usr/bin/env python3
"""Replay throughput (frames/s) per model and engine size on this machine.

Random weights (throughput does not depend on them). Exports each model to ONNX, writes one
synthetic drive bag (contrast-semask-data drive-bag), replays it with contrast-semask-replay
(the default parameters: bank_size 0 = the exported 256) and reads report.json.
    PYTHONPATH=. .venv/bin/python bench/bench_replay.py --frames 30 \\
        --configs micro:128x240 micro:272x512 small:272x512
Prints a markdown row per configuration; copy them to bench/RESULTS.md with the hardware.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
from pathlib import Path

import torch

from contrast_semask_ros.replay import main as replay
from contrast_semask_train.data.cli import main as data_cli
from contrast_semask_train.export import export_onnx
from contrast_semask_train.model import build_model, save_checkpoint

_logger = logging.getLogger('bench_replay')


def main() -> None:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--frames', type=int, default=30)
    parser.add_argument('--camera', default='272x512', help='bag frames HxW')
    parser.add_argument('--configs', nargs='+', default=['micro:128x240', 'small:272x512'],
                        help='variant:engine HxW')
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bag = root / 'drive'
        assert data_cli(['drive-bag', str(bag), '--mode', 'patches',
                         '--frames', str(args.frames), '--size',
                         args.camera, '--seed', '1000', '--no-progress']) == 0
        for config in args.configs:
            variant, size = config.split(':')
            height, width = (int(v) for v in size.split('x'))
            ckpt = save_checkpoint(root / f'{variant}.pt', build_model(variant, 8, 'contrastive'))
            onnx_path = root / f'{variant}_{size}.onnx'
            export_onnx(ckpt, onnx_path, height, width, 256)
            out = root / f'replay_{variant}_{size}'
            assert replay([str(bag), '--model', str(onnx_path), '--image-topic',
                           '/camera/image_raw', '--patch-cost-topic', '/traversal/patch_cost',
                           '--hold-out-every', '5', '--out', str(out), '--no-progress']) == 0
            report = json.loads((out / 'report.json').read_text())
            infer = report['latency_ms']['infer_ms']
            frame = report['latency_ms']['frame_ms']
            rows.append(f"| {variant} | {size} | {args.camera} | {report['frames']} | "
                        f"{report['throughput_fps']:.2f} | {infer['median']:.1f} | "
                        f"{frame['median']:.1f} / {frame['p99']:.1f} |")
    _logger.info('| model | engine HxW | camera HxW | frames | frames/s | infer median ms | '
                 'frame median / p99 ms |')
    _logger.info('|---|---|---|---|---|---|---|')
    for row in rows:
        _logger.info('%s', row)
    _logger.info('ONNX Runtime CPU, %s, %d torch threads', platform.processor() or
                 platform.machine(), torch.get_num_threads())


if __name__ == '__main__':
    main()

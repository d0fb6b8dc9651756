#!/usr/bin/env python3
"""Eager PyTorch forward latency of a model preset (random weights), for bench/RESULTS.md.

    .venv/bin/python bench/bench_model.py --variant small --size 512x512 --threads 2

Reports the median and min over --repeat timed runs after --warmup runs, with the hardware.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import time

import torch

from contrast_semask_train.model import build_model, count_parameters

_logger = logging.getLogger('bench_model')


def main() -> None:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--variant', default='small')
    parser.add_argument('--num-classes', type=int, default=8)
    parser.add_argument('--head', default='contrastive')
    parser.add_argument('--size', default='512x512', help='HxW')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeat', type=int, default=5)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    H, W = (int(v) for v in args.size.lower().split('x'))
    device = torch.device(args.device)
    model = build_model(args.variant, args.num_classes, args.head).eval().to(device)
    images = torch.randn(1, 3, H, W, device=device)
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.repeat):
            start = time.perf_counter()
            model(images)
            if device.type == 'cuda':
                torch.cuda.synchronize()
            if i >= args.warmup:
                times.append((time.perf_counter() - start) * 1e3)
    hardware = (torch.cuda.get_device_name(device) if device.type == 'cuda'
                else f'{platform.processor() or platform.machine()}, {args.threads} threads')
    _logger.info('| %s K=%d %s | %.2f M | %dx%d | %s | torch %s | %.0f / %.0f |',
                 args.variant, args.num_classes, args.head, count_parameters(model) / 1e6,
                 H, W, hardware, torch.__version__, statistics.median(times), min(times))


if __name__ == '__main__':
    main()

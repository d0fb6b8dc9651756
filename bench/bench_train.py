#!/usr/bin/env python3
"""Training throughput (images/s) and peak memory per step: forward, losses, backward, AdamW.

Random images and labels (no data loading), so this measures the model and the losses alone.
    PYTHONPATH=. .venv/bin/python bench/bench_train.py --variant micro --batch 8 --crop 128
    PYTHONPATH=. python bench/bench_train.py --variant small --batch 8 --crop 512 \\
        --device cuda --dtype bfloat16
Prints one markdown table row per run; copy it to bench/RESULTS.md with the hardware.
"""

from __future__ import annotations

import argparse
import logging
import platform
import resource
import statistics
import time
from contextlib import nullcontext

import torch

from contrast_semask_train.losses import Criterion, LossConfig
from contrast_semask_train.model import ModelOutputs, build_model
from contrast_semask_train.train import param_groups

_logger = logging.getLogger('bench_train')


def main() -> None:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--variant', default='micro')
    parser.add_argument('--head', default='contrastive', choices=('contrastive', 'vanilla'))
    parser.add_argument('--loss', default='seed', choices=('seed', 'reco', 'none'))
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--crop', type=int, default=128)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0 = default)')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.variant, 8, args.head).to(device).train()
    loss_cfg = LossConfig.from_dict({'contrastive': args.loss})
    criterion = Criterion(8, loss_cfg).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, 1e-4), lr=1e-4)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                if args.dtype == 'bfloat16' else nullcontext())
    images = torch.randn(args.batch, 3, args.crop, args.crop, device=device)
    labels = torch.randint(0, 8, (args.batch, args.crop, args.crop), device=device)
    labels[:, :, : args.crop // 8] = 255  # some ignored pixels, as in real crops

    def step() -> None:
        with autocast:
            outputs = model(images)
        terms = criterion(ModelOutputs(*(t.float() for t in outputs)), labels)
        terms.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    if device.type == 'cuda':
        peak = f'{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (allocated)'
        hardware = torch.cuda.get_device_name(device)
    else:
        peak = f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (max RSS)'
        hardware = f'{platform.machine()} CPU, {torch.get_num_threads()} threads'
    _logger.info('| %s %s, loss %s | %d x %d^2 | %s | %s | %s | %.1f | %.2f | %s |',
                 args.variant, args.head, args.loss, args.batch, args.crop, args.dtype, hardware,
                 torch.__version__, median * 1e3, args.batch / median, peak)


if __name__ == '__main__':
    main()

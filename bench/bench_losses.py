#!/usr/bin/env python3
"""The seed's pixel-contrastive bank loss (docs/MODEL.md §3.3): fused/chunked vs the seed's dense
formulation, forward+backward time and peak memory, for bench/RESULTS.md.

    PYTHONPATH=. .venv/bin/python bench/bench_losses.py --device cpu --n 16384 --dim 64 \\
        --repeat 3 --variants fused naive

n is the seed's size after warm-up: n/4 anchors (|A| = 4096) plus 3n/4 bank rows (3 x 4096).
Each variant runs in a fresh subprocess. Peak memory: on CPU the increase of the peak RSS
(getrusage ru_maxrss) over the RSS after the inputs are allocated; on CUDA the increase of
torch.cuda.max_memory_allocated over the allocation after the inputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from contrast_semask_train.losses import SEED_YCOR_CLASS_WEIGHTS, pixel_contrast_from_samples

_logger = logging.getLogger('bench_losses')
VARIANTS = ('fused', 'fused-nockpt', 'naive')


def dense_seed_loss(anchors: torch.Tensor, anchor_labels: torch.Tensor, bank: torch.Tensor,
                    bank_labels: torch.Tensor, temperature: float,
                    class_weights: torch.Tensor) -> torch.Tensor:
    """The seed's dense formulation (§3.3 steps 5-10): float n x n masks and exponentials.

    Unlike the seed, the off-diagonal mask is built on the inputs' device (docs/MODEL.md §3.3).
    """
    X = torch.cat([bank, anchors])  # n, D
    y = torch.cat([bank_labels, anchor_labels])[:, None]  # n, 1
    n = X.shape[0]
    mask = torch.eq(y, y.T).float()  # n, n
    logits = X @ X.detach().T / temperature  # n, n
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    neg_mask = 1.0 - mask
    logits_mask = torch.ones(n, n, device=X.device) - torch.eye(n, device=X.device)
    mask = mask * logits_mask
    neg_logits = (torch.exp(logits) * neg_mask).sum(dim=1, keepdim=True)  # n, 1
    exp_logits = torch.exp(logits)
    log_prob = logits - torch.log(exp_logits + neg_logits)
    num_pos = mask.sum(dim=1)
    has_pos = num_pos > 0
    mean_log_prob_pos = (mask * log_prob).sum(dim=1)[has_pos] / num_pos[has_pos]
    return -(class_weights[y[:, 0][has_pos]] * mean_log_prob_pos).mean()


def _rss_kib() -> int:
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _run_variant(variant: str, anchors: torch.Tensor, anchor_labels: torch.Tensor,
                 bank: torch.Tensor, bank_labels: torch.Tensor, weights: torch.Tensor,
                 chunk_size: int) -> torch.Tensor:
    """One forward + backward of the seed loss (tau 0.07, seed class weights, bank rows in the
    mean); returns the detached loss."""
    if variant == 'naive':
        loss = dense_seed_loss(anchors, anchor_labels, bank, bank_labels, 0.07, weights)
    else:
        loss = pixel_contrast_from_samples(
            anchors, anchor_labels, bank, bank_labels, 0.07, weights, True, chunk_size,
            checkpoint_blocks=variant == 'fused')
    loss.backward()
    anchors.grad = None
    return loss.detach()


def run_worker(args: argparse.Namespace) -> dict[str, float | str]:
    """Time one variant in this process; returns the measurements."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    m = args.n // 4
    feats = F.normalize(torch.randn(args.n, args.dim, generator=generator), dim=1).to(device)
    labels = torch.randint(0, 8, (args.n,), generator=generator).to(device)
    weights = torch.tensor(SEED_YCOR_CLASS_WEIGHTS, device=device)
    bank, bank_labels = feats[m:], labels[m:]  # n - m, D
    anchors = feats[:m].clone().requires_grad_()  # m, D
    # One tiny call first, so that lazy imports (torch.utils.checkpoint pulls in torch._dynamo,
    # ~70 MiB RSS once per process) do not count as the loss's working memory.
    _run_variant(args.variant, anchors[:8].detach().clone().requires_grad_(), labels[:8],
                 bank[:24], bank_labels[:24], weights, args.chunk_size)
    if device.type == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = _rss_kib() * 1024

    def step() -> torch.Tensor:
        return _run_variant(args.variant, anchors, labels[:m], bank, bank_labels, weights,
                            args.chunk_size)

    times, loss = [], torch.zeros(())
    for i in range(args.warmup + args.repeat):
        start = time.perf_counter()
        loss = step()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append((time.perf_counter() - start) * 1e3)
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {'variant': args.variant, 'median_ms': statistics.median(times),
            'min_ms': min(times), 'peak_mib': peak / 2**20, 'loss': float(loss)}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--n', type=int, default=16384, help='rows of X: bank + anchors')
    parser.add_argument('--dim', type=int, default=64)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--chunk-size', type=int, default=1024)
    parser.add_argument('--variants', nargs='+', default=['fused', 'naive'], choices=VARIANTS)
    parser.add_argument('--worker', choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        args.variant = args.worker
        sys.stdout.write(json.dumps(run_worker(args)) + '\n')
        return
    hardware = (torch.cuda.get_device_name() if args.device == 'cuda'
                else f'{platform.machine()} CPU, {args.threads} threads')
    _logger.info('| variant | n | D | chunk | hardware | torch | fwd+bwd ms (median / min) '
                 '| peak extra MiB | loss |')
    _logger.info('|---|---|---|---|---|---|---|---|---|')
    for variant in args.variants:
        command = [sys.executable, __file__, '--worker', variant, '--device', args.device,
                   '--n', str(args.n), '--dim', str(args.dim), '--repeat', str(args.repeat),
                   '--warmup', str(args.warmup), '--threads', str(args.threads),
                   '--chunk-size', str(args.chunk_size)]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            _logger.error('%s failed (exit %d):\n%s', variant, proc.returncode, proc.stderr)
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        chunk = args.chunk_size if variant != 'naive' else '-'
        _logger.info('| %s | %d | %d | %s | %s | %s | %.0f / %.0f | %.0f | %.6f |', variant,
                     args.n, args.dim, chunk, hardware, torch.__version__, result['median_ms'],
                     result['min_ms'], result['peak_mib'], result['loss'])


if __name__ == '__main__':
    main()

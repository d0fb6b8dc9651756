"""Latency of the deployable graph per backend (median and p99 of `infer`, bank of K prototypes).

Random weights (latency does not depend on them). Exports the ONNX graph first.
    PYTHONPATH=. .venv/bin/python bench/bench_backends.py --variant small --size 544x1024 \\
        --bank-size 1024 --runs 10
Prints one markdown table row per backend; copy them to bench/RESULTS.md with the hardware.
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from contrast_semask_ros.backends import Bank, open_backend
from contrast_semask_train.export import export_onnx
from contrast_semask_train.model import build_model, save_checkpoint

_logger = logging.getLogger('bench_backends')


def main() -> None:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--variant', default='micro')
    parser.add_argument('--size', default='512x512', help='HxW')
    parser.add_argument('--bank-size', type=int, default=1024)
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--backends', nargs='+', default=['onnxruntime', 'torch'])
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split('x'))
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(Path(tmp) / 'm.pt', build_model(args.variant, 8, 'contrastive'))
        onnx_path = Path(tmp) / 'm.onnx'
        export_onnx(ckpt, onnx_path, height, width, args.bank_size)
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        protos = rng.normal(size=(args.bank_size, 64 if args.variant != 'micro' else 16))
        protos = (protos / np.linalg.norm(protos, axis=1, keepdims=True)).astype(np.float32)
        bank = Bank(protos, rng.uniform(0, 1, args.bank_size).astype(np.float32))
        for name in args.backends:
            path = onnx_path if name == 'onnxruntime' else ckpt
            with open_backend(path, name, height=height, width=width,
                              bank_size=args.bank_size, device='cpu') as backend:
                for _ in range(args.warmup):
                    backend.infer(image, bank, 0.1)
                times = np.array([backend.infer(image, bank, 0.1).infer_ms
                                  for _ in range(args.runs)])
            _logger.info('| %s | %s | %dx%d | K=%d | fp32 | %s CPU, %d threads | %.0f | %.0f |',
                         args.variant, name, height, width, args.bank_size, platform.machine(),
                         torch.get_num_threads(), np.median(times), np.percentile(times, 99))


if __name__ == '__main__':
    main()

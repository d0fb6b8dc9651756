#!/usr/bin/env python3
"""Latency of the deployable graph per backend (median and p90 of `infer`, bank of K prototypes).

Random weights (latency does not depend on them). Exports the ONNX graph first.
    PYTHONPATH=. .venv/bin/python bench/bench_backends.py --variant small --size 544x1024 \\
        --bank-size 1024 --runs 10
On a GPU, configurations name backend:precision[:graph|:compile], e.g.
    --device cuda --configs torch:fp32 torch:fp16 torch:bf16 torch:fp16:graph \\
        torch:fp16:compile onnxruntime:fp32 onnxruntime:fp16
Prints one markdown table row per configuration with the achieved TFLOP/s (network FLOPs from
torch's FlopCounterMode, 2 per MAC); copy them to bench/RESULTS.md with the hardware.
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
from contrast_semask_ros.backends.torch_backend import TorchBackend
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
    parser.add_argument('--configs', nargs='+', default=['onnxruntime:fp32', 'torch:fp32'],
                        help='backend:precision[:graph|:compile]')
    parser.add_argument('--device', default='cpu', help='cpu or cuda (PyTorch backend)')
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split('x'))
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args.variant, 8, 'contrastive').eval()
        flops = network_flops(model, height, width)
        ckpt = save_checkpoint(Path(tmp) / 'm.pt', model)
        onnx_paths = {}
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        protos = rng.normal(size=(args.bank_size, 64 if args.variant != 'micro' else 16))
        protos = (protos / np.linalg.norm(protos, axis=1, keepdims=True)).astype(np.float32)
        bank = Bank(protos, rng.uniform(0, 1, args.bank_size).astype(np.float32))
        hardware = (torch.cuda.get_device_name() if args.device == 'cuda' else
                    f'{platform.machine()} CPU, {torch.get_num_threads()} threads')
        for config in args.configs:
            parts = config.split(':')
            name, precision, mode = parts[0], (parts[1:] or ['fp32'])[0], parts[2:]
            if name == 'onnxruntime':
                if precision not in onnx_paths:
                    onnx_paths[precision] = Path(tmp) / f'm_{precision}.onnx'
                    export_onnx(ckpt, onnx_paths[precision], height, width, args.bank_size,
                                fp16=precision == 'fp16')
                backend = open_backend(onnx_paths[precision])
            else:
                backend = TorchBackend(ckpt, height, width, args.bank_size, args.device,
                                       precision, cuda_graph='graph' in mode,
                                       compile='compile' in mode)
            with backend:
                for _ in range(args.warmup):
                    backend.infer(image, bank, 0.1)
                times = np.array([backend.infer(image, bank, 0.1).infer_ms
                                  for _ in range(args.runs)])
            median = float(np.median(times))
            _logger.info('| %s | %s | %dx%d | K=%d | %s | %s | %.1f | %.1f | %.2f |',
                         args.variant, config, height, width, args.bank_size, precision,
                         hardware, median, np.percentile(times, 90), flops / median / 1e9)


def network_flops(model: torch.nn.Module, height: int, width: int) -> float:
    """FLOPs (2 per MAC) of one forward of the network at height x width (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, height, width))
    return float(counter.get_total_flops())


if __name__ == '__main__':
    main()

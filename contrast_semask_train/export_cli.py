"""`contrast-semask-export`, the command line of export.py and tensorrt_build.py.

The command line only: it imports neither torch nor any training module. `onnx` imports the
torch-based exporter (export.py) when it runs; `trt` needs only tensorrt_build (TensorRT,
pycuda, onnx), so the engine is built on a robot that has no PyTorch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from contrast_semask_ros.atomic import clean_stale
from contrast_semask_ros.engine_spec import spec_path
from contrast_semask_ros.exit_codes import (
    EXIT_BAD_INPUT,
    EXIT_ENVIRONMENT,
    EXIT_OK,
    fail,
)

_logger = logging.getLogger('contrast_semask_export')

_DESCRIPTION = """\
Export a checkpoint to the deployable ONNX graph, with its EngineSpec and a parity report.

    contrast-semask-export onnx runs/contrastive_s/best.pt --height 544 --width 1024 \\
        --bank-size 1024 --out models/contrastive_s_544x1024.onnx

writes `model.onnx` (dynamo exporter, opset 18, static shapes, onnx.checker), `model.onnx.json`
(the EngineSpec) and `model.onnx.parity.json`: PyTorch against ONNX Runtime on fresh random
images and random banks, max abs error and cosine per output. The command fails (exit code 1)
when parity is above tolerance, and nothing is left at --out then. The spec records the ONNX
file's sha256, so a loader refuses an ONNX file and a spec from different exports. Exit codes
(README, "Exit codes"): 0 written, 1 parity or graph check failed, 2 unreadable checkpoint/ONNX/
spec or bad option, 3 TensorRT/onnxruntime/GPU missing or disk full; errors are one line.

    contrast-semask-export trt models/contrastive_s_544x1024.onnx --out models/cs.engine

builds a TensorRT engine (FP16 unless --fp32; INT8 with --int8 --calib DIR) on the GPU that
will run it; its spec records the TensorRT version, GPU and compute capability, and the runtime
refuses a mismatch.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='contrast-semask-export', description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    onnx_cmd = sub.add_parser('onnx', help='checkpoint -> deployable ONNX graph + spec + parity')
    onnx_cmd.add_argument('checkpoint', type=Path, help='a contrast_semask checkpoint (.pt)')
    onnx_cmd.add_argument('--height', type=int, required=True, help='input image height')
    onnx_cmd.add_argument('--width', type=int, required=True, help='input image width')
    onnx_cmd.add_argument('--bank-size', type=int, default=1024, help='Kmax prototypes')
    onnx_cmd.add_argument('--logits', action='store_true', help='also output the logits')
    onnx_cmd.add_argument('--fp16', action='store_true',
                          help='float16 network, LayerNorm/softmax/L2-norm in float32; I/O '
                          'unchanged (for a strongly typed TensorRT build)')
    onnx_cmd.add_argument('--atol', type=float, default=None,
                          help='parity tolerance (default 1e-3, or 3e-2 with --fp16)')
    onnx_cmd.add_argument('--out', type=Path, required=True, help='the .onnx file to write')
    trt_cmd = sub.add_parser('trt', help='ONNX (with its spec) -> TensorRT engine for this GPU')
    trt_cmd.add_argument('onnx', type=Path, help='a file written by `contrast-semask-export onnx`')
    trt_cmd.add_argument('--fp32', action='store_true',
                         help='FP32 engine (default: FP16; an --fp16 ONNX file is built '
                         'strongly typed in its own precision either way)')
    trt_cmd.add_argument('--int8', action='store_true',
                         help='INT8 with entropy calibration over --calib images (TRT 10)')
    trt_cmd.add_argument('--calib', type=Path, default=None,
                         help='directory of camera images for INT8 calibration')
    trt_cmd.add_argument('--workspace-gib', type=float, default=4.0)
    trt_cmd.add_argument('--out', type=Path, required=True, help='the .engine file to write')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    args = build_parser().parse_args(argv)
    if args.command == 'trt':
        return _main_trt(args)
    from contrast_semask_train.export import main_onnx  # torch: only for `onnx`

    return main_onnx(args)


def _main_trt(args: argparse.Namespace) -> int:
    from contrast_semask_ros.engine_spec import EngineSpecError
    from contrast_semask_train.tensorrt_build import EngineBuildError, build_engine

    onnx_path, out = Path(args.onnx), Path(args.out)
    if not onnx_path.is_file():
        return fail(_logger, f'ONNX file not found: {onnx_path}; write one with '
                    '`contrast-semask-export onnx`', EXIT_BAD_INPUT)
    for path in (out, spec_path(out)):
        clean_stale(path.parent, path.name)
    try:
        build_engine(onnx_path, out, fp16=not args.fp32,
                     workspace_bytes=int(args.workspace_gib * 2**30), int8=args.int8,
                     calibration_dir=args.calib)
    except EngineBuildError as err:
        # TensorRT/pycuda missing, or a TensorRT version without the feature: this machine
        missing = isinstance(err.__cause__, ImportError) or ' has no ' in str(err)
        return fail(_logger, err, EXIT_ENVIRONMENT if missing else EXIT_BAD_INPUT)
    except (EngineSpecError, OSError, ImportError) as err:
        return fail(_logger, err)
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())

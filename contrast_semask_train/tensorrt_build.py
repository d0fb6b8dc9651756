"""ONNX -> TensorRT engine with the TensorRT 10 Python API (imported lazily).

`build_engine` parses the exported ONNX file, builds an FP32 or FP16 engine for the GPU it runs
on (a timing cache next to the engine speeds up rebuilds), and writes the engine with its
EngineSpec extended by the TensorRT version, GPU name, compute capability and precision.
TensorRT 11 removed `BuilderFlag.FP16` (export_notes.md §4.2): there, FP16 must come from an
FP16 ONNX file, and this builder refuses `fp16=True` with that explanation.
INT8 calibration is not implemented yet.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from contrast_semask_ros.engine_spec import read_spec, write_spec

_logger = logging.getLogger(__name__)

TENSORRT_HINT = ('TensorRT is not installed: on a Jetson it comes with JetPack; on x86_64 '
                 'install the `tensorrt` package from NVIDIA (pip install tensorrt, which needs '
                 "NVIDIA's package index) matching your CUDA version")


class EngineBuildError(RuntimeError):
    """TensorRT missing, the ONNX file not parsable, or the build failed."""


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as err:
        raise EngineBuildError(TENSORRT_HINT) from err
    return trt


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor') of device 0, through pycuda."""
    try:
        import pycuda.driver as cuda
    except ImportError as err:
        raise EngineBuildError('pycuda is needed to identify the GPU: pip install pycuda') from err
    cuda.init()
    device = cuda.Device(0)
    major, minor = device.compute_capability()
    return device.name(), f'{major}.{minor}'


def build_engine(onnx_path: str | os.PathLike, out: str | os.PathLike, fp16: bool = True,
                 workspace_bytes: int = 4 << 30) -> Path:
    """Build `out` (.engine) from `onnx_path` and its spec; returns the engine path."""
    trt = _import_tensorrt()
    onnx_path, out = Path(onnx_path), Path(out)
    spec = read_spec(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10+
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f'TensorRT could not parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        if not hasattr(trt.BuilderFlag, 'FP16'):
            raise EngineBuildError(f'TensorRT {trt.__version__} has no FP16 builder flag '
                                   '(removed in 11): build from an FP16 ONNX file instead')
        config.set_flag(trt.BuilderFlag.FP16)
    cache_path = out.with_suffix('.timing-cache')
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b'')
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError('the TensorRT build failed; see the TensorRT log above')
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f'.{out.name}.tmp')
    tmp.write_bytes(memoryview(plan))
    cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
    gpu, capability = gpu_identity()
    engine_spec = dataclasses.replace(
        spec, precision='fp16' if fp16 else 'fp32', tensorrt_version=trt.__version__,
        gpu_name=gpu, compute_capability=capability)
    write_spec(engine_spec, out)
    os.replace(tmp, out)
    _logger.info('built %s for %s (sm %s) with TensorRT %s, %s', out, gpu, capability,
                 trt.__version__, engine_spec.precision)
    return out

"""ONNX -> TensorRT engine with the TensorRT 10 Python API (imported lazily).

`build_engine` parses the exported ONNX file, builds an FP32 or FP16 engine for the GPU it runs
on (a timing cache next to the engine speeds up rebuilds), and writes the engine with its
EngineSpec extended by the TensorRT version, GPU name, compute capability and precision.
TensorRT 11 removed `BuilderFlag.FP16` (weakly typed precision flags are gone there): FP16
must come from an FP16 ONNX file, and this builder refuses `fp16=True` with that explanation.

INT8 (`int8=True, calibration_dir=DIR`): TensorRT's entropy calibrator (IInt8EntropyCalibrator2)
over real images from DIR, resized to the engine size, with a random unit-norm prototype bank
(the bank only feeds the propagation tail, which INT8 does not touch much). The calibration
cache is written next to the engine and reused. Implicit INT8 calibration is deprecated since
TensorRT 10.1 and gone in 11: there, quantize the ONNX file with NVIDIA ModelOpt instead; this
builder says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from contrast_semask_ros.atomic import atomic_path, atomic_write_bytes
from contrast_semask_ros.engine_spec import INPUT_NAMES, EngineSpec, read_spec, spec_path

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


IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')


def calibration_images(directory: str | os.PathLike, limit: int = 500) -> list[Path]:
    """The image files (png/jpg/bmp, sorted) under `directory`, at most `limit` evenly spaced."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EngineBuildError(f'--calib must be a directory of images, got {directory}')
    files = sorted(p for p in directory.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EngineBuildError(f'no {"/".join(IMAGE_SUFFIXES)} images under {directory}: INT8 '
                               'calibration needs real frames from the robot\'s camera')
    step = max(1, len(files) // limit)
    return files[::step][:limit]


def calibration_feeds(spec: EngineSpec, path: Path, rng: np.random.Generator
                      ) -> dict[str, np.ndarray]:
    """One calibration batch: the image at `path` resized to the spec size, a random bank."""
    import cv2

    from contrast_semask_ros.preprocess import resize_image

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise EngineBuildError(f'cannot read calibration image {path}')
    rgb = resize_image(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (spec.width, spec.height))
    K, D = spec.bank_size, spec.embedding_dim
    prototypes = rng.normal(size=(K, D)).astype(np.float32)
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    values = (np.ascontiguousarray(rgb[None]), prototypes,
              rng.uniform(0, 1, K).astype(np.float32), np.ones(K, np.float32),
              np.array([0.1], np.float32))
    return dict(zip(INPUT_NAMES, values, strict=True))


def make_entropy_calibrator(trt, spec: EngineSpec, images: list[Path], cache_path: Path):
    """A trt.IInt8EntropyCalibrator2 feeding `images` one per batch through pycuda buffers."""
    import pycuda.driver as cuda

    if not hasattr(trt, 'IInt8EntropyCalibrator2'):
        raise EngineBuildError(f'TensorRT {trt.__version__} has no implicit INT8 calibration '
                               '(removed in 11): quantize the ONNX file with NVIDIA ModelOpt '
                               '(explicit Q/DQ) and build that instead')

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(0)
            self.pending = list(images)
            self.buffers = {t.name: cuda.mem_alloc(int(np.prod(t.shape)) *
                                                   np.dtype(t.dtype).itemsize)
                            for t in spec.inputs}

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if not self.pending:
                return None
            feeds = calibration_feeds(spec, self.pending.pop(0), self.rng)
            for name in names:
                cuda.memcpy_htod(self.buffers[name], feeds[name])
            return [int(self.buffers[name]) for name in names]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: bytes) -> None:
            atomic_write_bytes(cache_path, bytes(cache))

    return EntropyCalibrator()


def build_engine(onnx_path: str | os.PathLike, out: str | os.PathLike, fp16: bool = True,
                 workspace_bytes: int = 4 << 30, int8: bool = False,
                 calibration_dir: str | os.PathLike | None = None) -> Path:
    """Build `out` (.engine) from `onnx_path` and its spec; returns the engine path.

    int8 needs `calibration_dir` (images); FP16 stays enabled for the layers INT8 does not take.
    """
    onnx_path, out = Path(onnx_path), Path(out)
    spec = read_spec(onnx_path)
    calib = None
    if int8:
        if calibration_dir is None:
            raise EngineBuildError('INT8 needs calibration images: --int8 --calib DIR')
        calib = calibration_images(calibration_dir)  # checked before TensorRT is needed
    trt = _import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # An FP16 ONNX file (export --fp16) carries its own precision: build it strongly typed, the
    # path that also works on TensorRT 11. Otherwise weakly typed with builder flags (TRT 10).
    strongly_typed = spec.precision == 'fp16'
    if strongly_typed and int8:
        raise EngineBuildError('INT8 calibration needs an fp32 ONNX file (export without '
                               '--fp16); FP16 stays enabled for the layers INT8 does not take')
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)  # explicit batch is the only mode in TRT 10+
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f'TensorRT could not parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16 and not strongly_typed:
        if not hasattr(trt.BuilderFlag, 'FP16'):
            raise EngineBuildError(f'TensorRT {trt.__version__} has no FP16 builder flag '
                                   '(removed in 11): build from an FP16 ONNX file instead')
        config.set_flag(trt.BuilderFlag.FP16)
    if calib is not None:
        if not hasattr(trt.BuilderFlag, 'INT8'):
            raise EngineBuildError(f'TensorRT {trt.__version__} has no INT8 builder flag: '
                                   'quantize the ONNX file with NVIDIA ModelOpt instead')
        config.set_flag(trt.BuilderFlag.INT8)
        gpu_identity()  # initialises CUDA for the calibrator's buffers
        import pycuda.driver as cuda

        context = cuda.Device(0).retain_primary_context()
        context.push()
        config.int8_calibrator = make_entropy_calibrator(
            trt, spec, calib, out.with_suffix('.calib-cache'))
        _logger.info('INT8 calibration over %d images from %s', len(calib), calibration_dir)
    cache_path = out.with_suffix('.timing-cache')
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b'')
    config.set_timing_cache(cache, ignore_mismatch=False)
    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if calib is not None:
            context.pop()
            context.detach()
    if plan is None:
        raise EngineBuildError('the TensorRT build failed; see the TensorRT log above')
    atomic_write_bytes(cache_path, memoryview(config.get_timing_cache().serialize()))
    gpu, capability = gpu_identity()
    engine_spec = dataclasses.replace(
        spec, precision='int8' if int8 else 'fp16' if fp16 or strongly_typed else 'fp32',
        tensorrt_version=trt.__version__,
        gpu_name=gpu, compute_capability=capability)
    engine_spec.validate()
    # engine and spec go to temp files beside `out` and are committed together (engine first)
    with contextlib.ExitStack() as commit:
        tmp_spec = commit.enter_context(atomic_path(spec_path(out)))
        tmp_engine = commit.enter_context(atomic_path(out))
        tmp_engine.write_bytes(memoryview(plan))
        tmp_spec.write_text(engine_spec.to_json())
    _logger.info('built %s for %s (sm %s) with TensorRT %s, %s', out, gpu, capability,
                 trt.__version__, engine_spec.precision)
    return out

"""ONNX -> TensorRT engine with the TensorRT 10 Python API (imported lazily).

`build_engine` identifies the GPU first (pycuda; a missing pycuda or GPU fails before a build
that can take many minutes), parses the exported ONNX file, builds an FP32 or FP16 engine for
that GPU (a timing cache next to the engine speeds up rebuilds), and writes the engine with its
EngineSpec extended by the TensorRT version, GPU name, compute capability, precision and the
engine's SHA-256. Engine and spec go to temp files beside `out` (contrast_semask_ros.atomic)
from the start: any failure or interruption leaves `out` as it was and no temp file; temps a
killed run left are removed at the next start.
TensorRT 11 removed `BuilderFlag.FP16` (weakly typed precision flags are gone there): FP16
must come from an FP16 ONNX file, and this builder refuses `fp16=True` with that explanation.

INT8 (`int8=True, calibration_dir=DIR`): TensorRT's entropy calibrator (IInt8EntropyCalibrator2)
over real images from DIR, resized to the engine size, with a random unit-norm prototype bank
(the bank only feeds the propagation tail, which INT8 does not touch much). The calibration
cache next to the engine is keyed by the ONNX file's SHA-256, the calibration set (names
relative to DIR, sizes, mtimes) and the TensorRT version: a cache written for anything else is
refused with a log line and calibration runs again. Implicit INT8 calibration is deprecated since
TensorRT 10.1 and gone in 11: there, quantize the ONNX file with NVIDIA ModelOpt instead; this
builder says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from contrast_semask_ros.atomic import atomic_path, atomic_write_bytes, clean_stale
from contrast_semask_ros.engine_spec import (
    INPUT_NAMES,
    EngineSpec,
    file_sha256,
    read_spec,
    spec_path,
)

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
    try:
        cuda.init()
        device = cuda.Device(0)
        major, minor = device.compute_capability()
        return device.name(), f'{major}.{minor}'
    except cuda.Error as err:
        raise EngineBuildError(f'this machine has no usable CUDA GPU: {err}') from err


# --- TensorRT-safe graph ----------------------------------------------------------------------

# Ops that may consume a bool tensor in a graph for TensorRT 10.0-10.3 (JetPack 6): the
# comparisons and logical ops, Where's condition, and Cast. Anything else (Reshape, reductions,
# Concat, ...) on a bool tensor fails to parse or build before TensorRT 10.7.
BOOL_CONSUMERS = frozenset({'Equal', 'Greater', 'GreaterOrEqual', 'Less', 'LessOrEqual',
                            'And', 'Or', 'Xor', 'Not', 'Where', 'Cast'})


def tensor_types(graph: Any) -> dict[str, int]:
    """Element type (onnx.TensorProto enum) of every named tensor of a shape-inferred graph:
    inputs, outputs, value_info, initializers and Constant outputs."""
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*graph.value_info, *graph.input, *graph.output)}
    types.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        if node.op_type == 'Constant':
            for attr in node.attribute:
                if attr.name == 'value':
                    types[node.output[0]] = attr.t.data_type
    return types


def tensorrt_type_violations(model: Any) -> list[str]:
    """Why `model` (an onnx.ModelProto) is not safe for TensorRT 10.0-10.3; [] when it is.

    uint8 is consumed only by one Cast, the first op on a graph input; bool only by
    BOOL_CONSUMERS. Types come from onnx shape inference.
    """
    import onnx

    graph = onnx.shape_inference.infer_shapes(model).graph
    types = tensor_types(graph)
    uint8, boolean = onnx.TensorProto.UINT8, onnx.TensorProto.BOOL
    graph_inputs = {i.name for i in graph.input}
    problems, uint8_users = [], Counter()
    for node in graph.node:
        for name in filter(None, node.input):
            kind = types.get(name)
            if kind == uint8:
                uint8_users[name] += 1
                if node.op_type != 'Cast' or name not in graph_inputs:
                    problems.append(f'{node.op_type} {node.name!r} consumes uint8 {name!r} '
                                    '(cast the graph input to float first)')
            elif kind == boolean and node.op_type not in BOOL_CONSUMERS:
                problems.append(f'{node.op_type} {node.name!r} consumes bool {name!r}')
    problems += [f'uint8 {name!r} has {count} consumers (one Cast to float only)'
                 for name, count in uint8_users.items() if count > 1]
    return problems


# --- INT8 calibration set and cache -------------------------------------------------------------

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')


def evenly_spaced(items: Sequence[Any], limit: int) -> list[Any]:
    """At most `limit` of `items`, evenly spaced over the whole sequence (first and last
    included); all of them when there are no more than `limit`."""
    if limit < 1:
        raise ValueError(f'limit must be >= 1, got {limit}')
    n = len(items)
    if n <= limit:
        return list(items)
    if limit == 1:
        return [items[(n - 1) // 2]]
    # index round(i * (n - 1) / (limit - 1)), in integers; distinct because n > limit
    return [items[(i * (n - 1) + (limit - 1) // 2) // (limit - 1)] for i in range(limit)]


def calibration_images(directory: str | os.PathLike, limit: int = 500) -> list[Path]:
    """The image files (png/jpg/bmp, sorted) under `directory`, at most `limit` evenly spaced."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EngineBuildError(f'--calib must be a directory of images, got {directory}')
    files = sorted(p for p in directory.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EngineBuildError(f'no {"/".join(IMAGE_SUFFIXES)} images under {directory}: INT8 '
                               'calibration needs real frames from the robot\'s camera')
    return evenly_spaced(files, limit)


def calibration_key(onnx_path: str | os.PathLike, images: Sequence[Path],
                    root: str | os.PathLike, tensorrt_version: str) -> str:
    """Hex SHA-256 naming what a calibration cache was computed from: the ONNX file's SHA-256,
    the TensorRT version, and each image's name relative to `root`, size and mtime (ns)."""
    root = Path(root)
    record = {'onnx_sha256': file_sha256(onnx_path), 'tensorrt': tensorrt_version,
              'images': [(p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                         for p in images]}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


CALIBRATION_CACHE_MAGIC = b'contrast-semask calibration cache v1 key='


def read_calibration_cache(path: str | os.PathLike, key: str) -> bytes | None:
    """TensorRT's cache bytes stored at `path` for `key`; None (calibrate again) when there is
    none or it was written for another key: another ONNX file, calibration set or TensorRT
    version, or by a version of this tool that did not key its caches."""
    path = Path(path)
    if not path.is_file():
        return None
    header, newline, cache = path.read_bytes().partition(b'\n')
    if newline and header == CALIBRATION_CACHE_MAGIC + key.encode('ascii'):
        _logger.info('INT8 calibration cache %s matches: reused', path)
        return cache
    _logger.warning('INT8 calibration cache %s is stale (written for another ONNX file, '
                    'calibration set or TensorRT version): refused, calibrating again', path)
    return None


def write_calibration_cache(path: str | os.PathLike, key: str, cache: bytes) -> Path:
    """Store TensorRT's cache bytes at `path` under `key` (atomically)."""
    header = CALIBRATION_CACHE_MAGIC + key.encode('ascii') + b'\n'
    return atomic_write_bytes(path, header + bytes(cache))


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


def make_entropy_calibrator(trt, spec: EngineSpec, images: list[Path], cache_path: Path,
                            key: str):
    """A trt.IInt8EntropyCalibrator2 feeding `images` one per batch through pycuda buffers;
    its cache at `cache_path` is used only when it was written under `key`."""
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
            return read_calibration_cache(cache_path, key)

        def write_calibration_cache(self, cache: bytes) -> None:
            write_calibration_cache(cache_path, key, cache)

    return EntropyCalibrator()


# --- the build ----------------------------------------------------------------------------------

def engine_side_files(out: Path) -> tuple[Path, Path, Path, Path]:
    """(engine, its spec, timing cache, calibration cache): what a build of `out` writes."""
    return out, spec_path(out), out.with_suffix('.timing-cache'), out.with_suffix('.calib-cache')


@contextlib.contextmanager
def _cuda_context() -> Iterator[None]:
    """Device 0's primary context, current for the block (the calibrator's buffers)."""
    import pycuda.driver as cuda

    context = cuda.Device(0).retain_primary_context()
    context.push()
    try:
        yield
    finally:
        context.pop()
        context.detach()


def _parse_network(trt, builder, logger, onnx_path: Path, strongly_typed: bool):
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)  # explicit batch is the only mode in TRT 10+
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f'TensorRT could not parse {onnx_path}: {errors}')
    return network, parser  # the parser must outlive the build (it owns the weights)


def _set_precision(trt, config, fp16: bool, int8: bool, strongly_typed: bool) -> None:
    if fp16 and not strongly_typed:
        if not hasattr(trt.BuilderFlag, 'FP16'):
            raise EngineBuildError(f'TensorRT {trt.__version__} has no FP16 builder flag '
                                   '(removed in 11): build from an FP16 ONNX file instead')
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        if not hasattr(trt.BuilderFlag, 'INT8'):
            raise EngineBuildError(f'TensorRT {trt.__version__} has no INT8 builder flag: '
                                   'quantize the ONNX file with NVIDIA ModelOpt instead')
        config.set_flag(trt.BuilderFlag.INT8)


def build_engine(onnx_path: str | os.PathLike, out: str | os.PathLike, fp16: bool = True,
                 workspace_bytes: int = 4 << 30, int8: bool = False,
                 calibration_dir: str | os.PathLike | None = None) -> Path:
    """Build `out` (.engine) from `onnx_path` and its spec; returns the engine path.

    int8 needs `calibration_dir` (images); FP16 stays enabled for the layers INT8 does not take.
    Order: inputs, TensorRT and the GPU are checked before the (long) build; engine and spec
    are written through temp files opened before it, so a failure anywhere leaves neither.
    """
    onnx_path, out = Path(onnx_path), Path(out)
    spec = read_spec(onnx_path)
    # An FP16 ONNX file (export --fp16) carries its own precision: build it strongly typed, the
    # path that also works on TensorRT 11. Otherwise weakly typed with builder flags (TRT 10).
    strongly_typed = spec.precision == 'fp16'
    calib = None
    if int8:
        if calibration_dir is None:
            raise EngineBuildError('INT8 needs calibration images: --int8 --calib DIR')
        if strongly_typed:
            raise EngineBuildError('INT8 calibration needs an fp32 ONNX file (export without '
                                   '--fp16); FP16 stays enabled for the layers INT8 does not '
                                   'take')
        calib = calibration_images(calibration_dir)  # checked before TensorRT is needed
    trt = _import_tensorrt()
    # reason: identify the GPU before a build that takes minutes, not after it
    gpu, capability = gpu_identity()
    engine_path, engine_spec_path, timing_path, calib_path = engine_side_files(out)
    for path in (engine_path, engine_spec_path, timing_path, calib_path):
        clean_stale(path.parent, path.name)  # temps of a killed earlier run
    with contextlib.ExitStack() as commit:
        # committed together at the end, engine first; removed on any failure
        tmp_spec = commit.enter_context(atomic_path(engine_spec_path))
        tmp_engine = commit.enter_context(atomic_path(engine_path))
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network, _parser = _parse_network(trt, builder, logger, onnx_path, strongly_typed)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        _set_precision(trt, config, fp16, calib is not None, strongly_typed)
        with contextlib.ExitStack() as cuda_scope:
            if calib is not None:
                cuda_scope.enter_context(_cuda_context())
                key = calibration_key(onnx_path, calib, calibration_dir, trt.__version__)
                config.int8_calibrator = make_entropy_calibrator(trt, spec, calib, calib_path,
                                                                 key)
                _logger.info('INT8 calibration over %d images from %s', len(calib),
                             calibration_dir)
            timing = config.create_timing_cache(
                timing_path.read_bytes() if timing_path.is_file() else b'')
            config.set_timing_cache(timing, ignore_mismatch=False)
            plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineBuildError('the TensorRT build failed; see the TensorRT log above')
        plan = memoryview(plan)
        engine_spec = dataclasses.replace(
            spec, precision='int8' if int8 else 'fp16' if fp16 or strongly_typed else 'fp32',
            tensorrt_version=trt.__version__, gpu_name=gpu, compute_capability=capability,
            engine_sha256=hashlib.sha256(plan).hexdigest())
        engine_spec.validate()
        tmp_engine.write_bytes(plan)
        tmp_spec.write_text(engine_spec.to_json())
        atomic_write_bytes(timing_path, memoryview(config.get_timing_cache().serialize()))
    _logger.info('built %s for %s (sm %s) with TensorRT %s, %s', out, gpu, capability,
                 trt.__version__, engine_spec.precision)
    return out

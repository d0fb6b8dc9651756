"""contrast_semask_train.tensorrt_build without TensorRT: a fake `tensorrt` (and `pycuda`) module
in sys.modules records what the builder does, so the order (GPU identified before the build),
the cleanup on failure, the keyed INT8 calibration cache and the calibration set are checked.
A real TensorRT build is a `gpu` test that skips here."""

from __future__ import annotations

import json
import logging
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from contrast_semask_ros.atomic import stale_temp_files
from contrast_semask_ros.engine_spec import EngineSpec, spec_path, write_spec
from contrast_semask_train import tensorrt_build
from contrast_semask_train.tensorrt_build import (
    EngineBuildError,
    build_engine,
    calibration_images,
    calibration_key,
    evenly_spaced,
    read_calibration_cache,
    write_calibration_cache,
)

PLAN = b'serialized engine'


class FakeTensorRT:
    """The parts of the TensorRT 10 Python API that build_engine uses, as a module."""

    def __init__(self, events: list[str], plan: bytes | None = PLAN,
                 build_error: BaseException | None = None) -> None:
        self.events, self.plan, self.build_error = events, plan, build_error
        self.calibration_cache = b'calibration table'

    def module(self) -> types.ModuleType:
        fake = self
        trt = types.ModuleType('tensorrt')
        trt.__version__ = '10.3.0'

        class Logger:
            WARNING = 2

            def __init__(self, level: int) -> None:
                pass

        class Config:
            int8_calibrator = None

            def set_memory_pool_limit(self, pool: str, size: int) -> None:
                pass

            def set_flag(self, flag: str) -> None:
                fake.events.append(f'flag {flag}')

            def create_timing_cache(self, data: bytes) -> bytes:
                return bytes(data)

            def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> None:
                pass

            def get_timing_cache(self) -> types.SimpleNamespace:
                return types.SimpleNamespace(serialize=lambda: b'timing')

        class Builder:
            def __init__(self, logger: Logger) -> None:
                fake.events.append('Builder')

            def create_network(self, flags: int) -> object:
                return object()

            def create_builder_config(self) -> Config:
                return Config()

            def build_serialized_network(self, network: object, config: Config) -> bytes | None:
                fake.events.append('build')
                calibrator = config.int8_calibrator
                if calibrator is not None:  # what TensorRT does with an entropy calibrator
                    cache = calibrator.read_calibration_cache()
                    if cache is None:
                        fake.events.append('calibrate')
                        assert calibrator.get_batch(['image', 'prototypes']) is not None
                        calibrator.write_calibration_cache(fake.calibration_cache)
                    else:
                        fake.events.append(f'cache hit {cache!r}')
                if fake.build_error is not None:
                    raise fake.build_error
                return fake.plan

        class OnnxParser:
            num_errors = 0

            def __init__(self, network: object, logger: Logger) -> None:
                pass

            def parse_from_file(self, path: str) -> bool:
                fake.events.append('parse')
                return True

        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

        trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
        trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE='workspace')
        trt.BuilderFlag = types.SimpleNamespace(FP16='FP16', INT8='INT8')
        return trt


def _fake_pycuda(events: list[str]) -> dict[str, types.ModuleType]:
    driver = types.ModuleType('pycuda.driver')

    class Context:
        def push(self) -> None:
            events.append('context push')

        def pop(self) -> None:
            events.append('context pop')

        def detach(self) -> None:
            pass

    driver.Device = lambda index: types.SimpleNamespace(retain_primary_context=Context)
    driver.mem_alloc = lambda size: 4096
    driver.memcpy_htod = lambda buffer, array: None
    package = types.ModuleType('pycuda')
    package.driver = driver
    return {'pycuda': package, 'pycuda.driver': driver}


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    """A stand-in ONNX file (the fake parser does not read it) with a real EngineSpec."""
    path = tmp_path / 'm.onnx'
    path.write_bytes(b'onnx model bytes')
    spec = EngineSpec.build(height=24, width=32, bank_size=4, embedding_dim=8, stride=4,
                            mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0), class_names=('a', 'b'),
                            checkpoint_sha256='0' * 64, precision='fp32')
    write_spec(spec, path)
    return path


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    log: list[str] = []

    def gpu_identity() -> tuple[str, str]:
        log.append('gpu_identity')
        return 'Orin (fake)', '8.7'

    monkeypatch.setattr(tensorrt_build, 'gpu_identity', gpu_identity)
    return log


def _install(monkeypatch: pytest.MonkeyPatch, fake: FakeTensorRT) -> None:
    monkeypatch.setitem(sys.modules, 'tensorrt', fake.module())
    for name, module in _fake_pycuda(fake.events).items():
        monkeypatch.setitem(sys.modules, name, module)


def _leftovers(directory: Path) -> list[str]:
    """Everything in `directory` but the ONNX file and its spec."""
    return sorted(p.name for p in directory.iterdir() if p.name not in ('m.onnx', 'm.onnx.json'))


def test_build_writes_engine_spec_and_timing_cache(
        monkeypatch: pytest.MonkeyPatch, onnx_file: Path, events: list[str]) -> None:
    _install(monkeypatch, FakeTensorRT(events))
    out = onnx_file.parent / 'm.engine'
    assert build_engine(onnx_file, out) == out
    assert events == ['gpu_identity', 'Builder', 'parse', 'flag FP16', 'build']
    assert out.read_bytes() == PLAN
    spec = json.loads(spec_path(out).read_text())
    assert (spec['gpu_name'], spec['compute_capability']) == ('Orin (fake)', '8.7')
    assert spec['tensorrt_version'] == '10.3.0' and spec['precision'] == 'fp16'
    assert _leftovers(onnx_file.parent) == ['m.engine', 'm.engine.json', 'm.timing-cache']


def test_gpu_is_identified_before_the_build(
        monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    """pycuda missing or no GPU: the builder fails before TensorRT builds anything (a build
    takes minutes) and writes nothing, not even the timing cache."""
    events: list[str] = []

    def no_gpu() -> tuple[str, str]:
        events.append('gpu_identity')
        raise EngineBuildError('pycuda is needed to identify the GPU: pip install pycuda')

    monkeypatch.setattr(tensorrt_build, 'gpu_identity', no_gpu)
    _install(monkeypatch, FakeTensorRT(events))
    with pytest.raises(EngineBuildError, match='pycuda'):
        build_engine(onnx_file, onnx_file.parent / 'm.engine')
    assert events == ['gpu_identity']
    assert _leftovers(onnx_file.parent) == []


@pytest.mark.parametrize('failure', ['plan is None', 'interrupted'])
def test_failed_build_leaves_old_engine_and_no_temp_files(
        monkeypatch: pytest.MonkeyPatch, onnx_file: Path, events: list[str],
        failure: str) -> None:
    """A failed or interrupted build leaves the previous engine and spec as they were and no
    temp file; temps that a killed earlier build left are removed at the start."""
    out = onnx_file.parent / 'm.engine'
    out.write_bytes(b'old engine')
    spec_path(out).write_text('{"old": true}')
    killed = onnx_file.parent / '.m.engine.abc123.tmp'  # what a SIGKILLed build leaves
    killed.write_bytes(b'half an engine')
    if failure == 'plan is None':
        _install(monkeypatch, FakeTensorRT(events, plan=None))
        with pytest.raises(EngineBuildError, match='build failed'):
            build_engine(onnx_file, out)
    else:
        _install(monkeypatch, FakeTensorRT(events, build_error=KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            build_engine(onnx_file, out)
    assert events.index('gpu_identity') < events.index('build')
    assert out.read_bytes() == b'old engine' and spec_path(out).read_text() == '{"old": true}'
    assert stale_temp_files(out.parent, out.name) == []
    assert stale_temp_files(out.parent, spec_path(out).name) == []
    assert _leftovers(onnx_file.parent) == ['m.engine', 'm.engine.json']


def _frames(root: Path, count: int) -> Path:
    import cv2

    frames = root / 'frames'
    frames.mkdir(exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(frames / f'{i:03d}.png'), np.full((12, 16, 3), 10 * i, np.uint8))
    return frames


def test_int8_calibration_cache_is_reused_only_for_the_same_inputs(
        monkeypatch: pytest.MonkeyPatch, onnx_file: Path, events: list[str],
        caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip('cv2')
    fake = FakeTensorRT(events)
    _install(monkeypatch, fake)
    frames = _frames(onnx_file.parent, 3)
    out = onnx_file.parent / 'm8.engine'

    def build() -> list[str]:
        events.clear()
        build_engine(onnx_file, out, int8=True, calibration_dir=frames)
        return [e for e in events if e.startswith(('calibrate', 'cache hit', 'context'))]

    assert build() == ['context push', 'calibrate', 'context pop']
    assert build() == ['context push', "cache hit b'calibration table'", 'context pop']
    (frames / '003.png').write_bytes((frames / '000.png').read_bytes())  # a new frame
    with caplog.at_level(logging.WARNING, logger=tensorrt_build.__name__):
        assert build() == ['context push', 'calibrate', 'context pop']
    assert 'stale' in caplog.text and 'm8.calib-cache' in caplog.text
    onnx_file.write_bytes(b'another export')  # same spec, new ONNX file
    assert build() == ['context push', 'calibrate', 'context pop']
    assert build() == ['context push', "cache hit b'calibration table'", 'context pop']


def test_calibration_key_covers_onnx_images_and_tensorrt(tmp_path: Path) -> None:
    onnx_path = tmp_path / 'm.onnx'
    onnx_path.write_bytes(b'model')
    frames = tmp_path / 'frames'
    frames.mkdir()
    for name in ('a.png', 'b.png'):
        (frames / name).write_bytes(b'image ' + name.encode())
    images = sorted(frames.iterdir())

    def key(version: str = '10.3.0') -> str:
        return calibration_key(onnx_path, calibration_images(frames), frames, version)

    base = key()
    assert key() == base and len(base) == 64
    assert key('10.0.1') != base
    onnx_path.write_bytes(b'model, exported again')
    assert key() != base
    onnx_path.write_bytes(b'model')
    assert key() == base
    stat = images[0].stat()
    os.utime(images[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # edited in place
    assert key() != base
    os.utime(images[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert key() == base
    images[1].rename(frames / 'c.png')
    assert key() != base


def test_calibration_cache_file_refuses_another_key(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / 'm.calib-cache'
    assert read_calibration_cache(path, 'a' * 64) is None  # none yet: calibrate, no warning
    write_calibration_cache(path, 'a' * 64, b'TRT-1003-EntropyCalibration2\nimage: 3c010a14\n')
    assert read_calibration_cache(path, 'a' * 64) == (
        b'TRT-1003-EntropyCalibration2\nimage: 3c010a14\n')
    with caplog.at_level(logging.WARNING, logger=tensorrt_build.__name__):
        assert read_calibration_cache(path, 'b' * 64) is None
        path.write_bytes(b'TRT-1003-EntropyCalibration2\n')  # an unkeyed cache (older tool)
        assert read_calibration_cache(path, 'a' * 64) is None
    assert caplog.text.count('stale') == 2


def test_calibration_images_are_evenly_spaced_over_the_sorted_list(tmp_path: Path) -> None:
    for i in range(1000):
        (tmp_path / f'{i:04d}.jpg').touch()
    files = calibration_images(tmp_path, limit=300)
    indices = [int(p.stem) for p in files]
    assert len(indices) == 300 and indices[0] == 0 and indices[-1] == 999
    gaps = np.diff(indices)
    assert gaps.min() >= 3 and gaps.max() <= 4  # 999 / 299 = 3.34
    assert [int(p.stem) for p in calibration_images(tmp_path, limit=500)][-1] == 999
    assert len(calibration_images(tmp_path, limit=2000)) == 1000  # fewer than the limit: all


def test_evenly_spaced() -> None:
    assert evenly_spaced(range(10), 3) == [0, 5, 9]  # 0, 4.5 (halves round up), 9
    assert evenly_spaced(range(10), 10) == list(range(10))
    assert evenly_spaced(range(5), 1) == [2]
    assert evenly_spaced(range(999), 500) == [round(i * 998 / 499) for i in range(500)]
    with pytest.raises(ValueError, match='limit'):
        evenly_spaced(range(3), 0)


@pytest.mark.gpu
@pytest.mark.slow
def test_real_tensorrt_build(tmp_path: Path) -> None:
    """The real thing, where TensorRT, pycuda and a GPU exist (a Jetson, a GPU machine)."""
    pytest.importorskip('tensorrt', reason='TensorRT is not installed (it comes with JetPack '
                        "or from NVIDIA's index); the fake-module tests above cover the builder")
    pytest.importorskip('pycuda', reason='pycuda is not installed')
    from contrast_semask_train.export import export_onnx
    from contrast_semask_train.model import build_model, save_checkpoint

    ckpt = save_checkpoint(tmp_path / 'm.pt', build_model('micro', 8, 'contrastive'))
    onnx_path = tmp_path / 'm.onnx'
    export_onnx(ckpt, onnx_path, 64, 64, 8)
    out = build_engine(onnx_path, tmp_path / 'm.engine')
    spec = json.loads(spec_path(out).read_text())
    assert out.stat().st_size > 0 and spec['gpu_name'] and spec['precision'] == 'fp16'
    assert stale_temp_files(tmp_path, out.name) == []

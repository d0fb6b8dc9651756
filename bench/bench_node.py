#!/usr/bin/env python3
"""Node overhead beyond inference: `cost_map_node`'s own per-frame code path, publish included.

    .venv/bin/python bench/bench_node.py --frames 300 --warmup 30

Runs the real node class (contrast_semask_ros.node) with real rclpy and Fast DDS, sealed in a
private network namespace (test/ros_harness.py), on a backend whose graph costs nothing
(`_run` returns precomputed outputs of the engine's shapes), so everything timed is the node's
own work: `CostMapNode._process(msg, ...)` on a received rgb8 Image (decode, pipeline resize /
frame buffer / outputs, rendering, message fields, `publish()` of every subscribed output,
stats). A subscriber process subscribes to a chosen set of outputs, so the node computes and
publishes exactly those (as it does for rviz or a planner).

Per configuration it reports median / p99 over the frames of:
- `node`: `_process` wall time minus the backend call's host staging (`infer_ms`);
- `before publish`: the same minus the time inside every `publish()`;
- `publish <output>`: the time inside each output's `publish()` (rclpy -> CDR -> Fast DDS);
- minor page faults per frame during `_process` (0 = no fresh frame-sized allocations).
Prints markdown rows; copy them to bench/RESULTS.md with the machine and load it prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'test'))
sys.path.insert(0, str(REPO))

_logger = logging.getLogger('bench_node')

CONFIGS = {  # name -> outputs the subscriber process subscribes to
    'cost': ('cost',),
    'cost+confidence': ('cost', 'confidence'),
    'cost+confidence+embedding': ('cost', 'confidence', 'embedding'),
    'all five': ('cost', 'confidence', 'embedding', 'cost_overlay', 'embedding_viz'),
}
SUBSCRIBER = '''
import sys, rclpy
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node('bench_subscriber')
subs = [node.create_subscription(Image, t, lambda m: None, QoSProfile(depth=1))
        for t in sys.argv[1:]]
print('ready', flush=True)
rclpy.spin(node)
'''


def _precomputed_backend(height: int, width: int, dim: int, bank_size: int) -> Any:
    """A Backend at height x width whose graph returns fixed smooth outputs instantly."""
    import cv2

    from contrast_semask_ros.backends.base import Backend
    from contrast_semask_ros.engine_spec import EngineSpec

    spec = EngineSpec.build(height=height, width=width, stride=4, embedding_dim=dim,
                            bank_size=bank_size, mean=(123.675, 116.28, 103.53),
                            std=(58.395, 57.12, 57.375),
                            class_names=(), checkpoint_sha256='bench', opset=17,
                            precision='fp32')
    rng = np.random.default_rng(0)

    def smooth(low: float, high: float) -> np.ndarray:
        coarse = rng.uniform(low, high, (height // 32 + 1, width // 32 + 1)).astype(np.float32)
        return np.ascontiguousarray(cv2.resize(coarse, (width, height)))

    class Precomputed(Backend):
        name = 'precomputed'

        def __init__(self) -> None:
            super().__init__(spec)
            h, w = spec.output('embedding').shape[2:]
            hwc = cv2.resize(rng.normal(size=(h // 8 + 1, w // 8 + 1, dim)).astype(np.float32),
                             (w, h))
            hwc /= np.linalg.norm(hwc, axis=2, keepdims=True)
            self.outputs = (np.ascontiguousarray(hwc.transpose(2, 0, 1))[None],  # 1, D, h, w
                            smooth(0.0, 1.0)[None, None],  # cost, smooth like a real one
                            smooth(0.2, 1.0)[None, None])  # ~1/4 under min_confidence 0.5

        def _run(self, feeds: dict[str, np.ndarray], embedding_out: np.ndarray | None = None
                 ) -> tuple[np.ndarray, ...]:
            # Backend.infer copies the embedding into embedding_out, as a real backend's
            # output transfer (device to host) writes it there: part of infer_ms
            return self.outputs

    return Precomputed()


def camera_image(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 RGB: scikit-image's motorcycle_left.png resized (a real photo), or smooth
    noise when scikit-image is missing."""
    import cv2

    try:
        from importlib.resources import files

        path = Path(str(files('skimage.data') / 'motorcycle_left.png'))
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    except ImportError:
        bgr = None
    if bgr is None:
        coarse = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.cvtColor(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_BGR2RGB)


class _TimedPublisher:
    """Wraps a publisher: `publish` is timed into `times[name]`, counts pass through."""

    def __init__(self, publisher: Any, name: str, times: dict[str, list[float]]) -> None:
        self._publisher, self._name, self._times = publisher, name, times

    def publish(self, msg: Any) -> None:
        start = time.perf_counter()
        self._publisher.publish(msg)
        self._times.setdefault(self._name, []).append((time.perf_counter() - start) * 1e3)

    def get_subscription_count(self) -> int:
        return self._publisher.get_subscription_count()


def inner(args: argparse.Namespace) -> dict[str, Any]:
    """Inside the sealed namespace: the real node on the precomputed backend, one subscriber
    process per configuration."""
    import rclpy
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from contrast_semask_ros import codec
    from contrast_semask_ros import node as node_module
    from contrast_semask_ros.pipeline import Pipeline, PipelineConfig

    height, width = args.camera
    backend = _precomputed_backend(*args.engine, args.dim, args.bank_size)

    class BenchPipeline(Pipeline):
        @classmethod
        def open(cls, values: Any, reuse_outputs: bool = False) -> Pipeline:
            return cls(backend, PipelineConfig.from_values(values), reuse_outputs)

    node_module.Pipeline = BenchPipeline  # the node's own code, on the precomputed backend
    rclpy.init()
    node = node_module.CostMapNode()
    rng = np.random.default_rng(0)
    for i, proto in enumerate(rng.normal(size=(args.bank_size, args.dim))):  # a full bank
        node.pipeline.bank.add(proto, float(rng.uniform(0, 1)), i)
    image = codec.fill_image(Image(), camera_image(height, width, rng), 'rgb8')
    raw = serialize_message(image)
    messages = [deserialize_message(raw, Image) for _ in range(2)]  # as the executor hands them
    results: dict[str, Any] = {}
    stamp = 1_700_000_000 * 1_000_000_000  # 10 Hz, increasing across configurations
    for config, outputs in CONFIGS.items():
        sub = subprocess.Popen([sys.executable, '-c', SUBSCRIBER, *outputs],
                               stdout=subprocess.PIPE, text=True)
        sub.stdout.readline()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(
                node._pubs[o].get_subscription_count() > 0 for o in outputs):
            rclpy.spin_once(node, timeout_sec=0.1)
        publish_times: dict[str, list[float]] = {}
        real = dict(node._pubs)
        node._pubs = {n: _TimedPublisher(p, n, publish_times) for n, p in real.items()}
        node_ms, before_ms, faults = [], [], []
        for i in range(args.warmup + args.frames):
            stamp += 100_000_000
            msg = messages[i % 2]
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            published_before = sum(len(v) for v in publish_times.values())
            spent_before = sum(sum(v) for v in publish_times.values())
            faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            node._process(msg, time.monotonic())
            elapsed = (time.perf_counter() - start) * 1e3
            fault_count = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
            infer = node.stats._latency['infer_ms']._samples[-1]
            publish = sum(sum(v) for v in publish_times.values()) - spent_before
            assert sum(len(v) for v in publish_times.values()) - published_before == len(outputs)
            assert node.pipeline.frames.stamps[-1] == stamp  # every frame kept, as on a robot
            if i >= args.warmup:
                node_ms.append(elapsed - infer)
                before_ms.append(elapsed - infer - publish)
                faults.append(fault_count)
        node._pubs = real
        sub.terminate()
        sub.wait(10)
        results[config] = {
            'node': node_ms, 'before publish': before_ms, 'faults': faults,
            **{f'publish {n}': v[args.warmup:] for n, v in publish_times.items()}}
    results['patch'] = _time_patches(node, height, width, args.warmup + args.frames, rng)
    node.close()
    node.destroy_node()
    rclpy.try_shutdown()
    return results


def _time_patches(node: Any, height: int, width: int, count: int,
                  rng: np.random.Generator) -> dict[str, list[float]]:
    """`CostMapNode._on_patch` on received 32FC1 masks (two constant-cost rectangles) drawn
    on buffered frames: the executor thread's work per patch message."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from contrast_semask_ros import codec

    stamps, times = node.pipeline.frames.stamps, []
    for i in range(count):
        mask = np.full((height, width), np.nan, np.float32)
        for _ in range(2):
            top, left = int(rng.integers(0, height - 160)), int(rng.integers(0, width - 300))
            mask[top:top + 120, left:left + 240] = rng.uniform(0.0, 1.0)
        msg = codec.fill_image(Image(), mask, '32FC1')
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamps[-1 - i % 10],
                                                                 1_000_000_000)
        msg = deserialize_message(serialize_message(msg), Image)
        start = time.perf_counter()
        node._on_patch(msg)
        times.append((time.perf_counter() - start) * 1e3)
    assert node.stats.counts().get('patches_added', 0) >= count // 2
    return {'patch': times}


def _stats(values: list[float]) -> str:
    return f'{np.median(values):.2f} / {np.percentile(values, 99):.2f}'


def main() -> int:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--camera', default='544x1024', help='camera HxW')
    parser.add_argument('--engine', default='544x1024', help='engine input HxW')
    parser.add_argument('--dim', type=int, default=64, help='embedding width D')
    parser.add_argument('--bank-size', type=int, default=256, help='Kmax (the bank is full)')
    parser.add_argument('--frames', type=int, default=300)
    parser.add_argument('--warmup', type=int, default=30)
    parser.add_argument('--inner', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.camera = tuple(int(v) for v in args.camera.split('x'))
    args.engine = tuple(int(v) for v in args.engine.split('x'))
    if args.inner:
        from ros_harness import outside_namespace_reason

        refusal = outside_namespace_reason('bench_node.py --inner')
        if refusal:
            sys.stderr.write(refusal + '\n')
            return 3
        print(json.dumps(inner(args)))
        return 0
    from ros_harness import run_sealed

    proc = run_sealed([sys.executable, __file__, '--inner', *sys.argv[1:]], timeout=1800)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        return proc.returncode
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    _logger.info('camera %s, engine %s, D=%d, Kmax=%d (bank full), %d frames after %d warm-up; '
                 '%s, %d CPUs, python %s; load average %.2f %.2f %.2f',
                 'x'.join(map(str, args.camera)), 'x'.join(map(str, args.engine)), args.dim,
                 args.bank_size, args.frames, args.warmup, _cpu_model(), os.cpu_count(),
                 platform.python_version(), *os.getloadavg())
    rows = ['node', 'before publish'] + [f'publish {n}' for n in CONFIGS['all five']]
    _logger.info('| subscribed | ' + ' | '.join(rows) + ' | minor faults / frame |')
    _logger.info('|---|' + '---|' * (len(rows) + 1))
    patch = results.pop('patch')['patch']
    for config, times in results.items():
        cells = [_stats(times[r]) if r in times else '-' for r in rows]
        _logger.info('| %s | %s | %s |', config, ' | '.join(cells), _stats(times['faults']))
    _logger.info('patch message (`_on_patch`: decode + Pipeline.add_patch, 2 regions, executor '
                 'thread): %s ms median / p99 over %d', _stats(patch), len(patch))
    return 0


def _cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


if __name__ == '__main__':
    sys.exit(main())

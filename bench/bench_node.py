"""Node overhead beyond inference: what `cost_map_node` does per frame besides the backend call.

    PYTHONPATH=. .venv/bin/python bench/bench_node.py --frames 200 --warmup 20

The real code paths of contrast_semask_ros.node, without a node or DDS (no rclpy.init):

- receive: `deserialize_message` of a serialized rgb8 Image (what the rclpy executor does
  before the image callback; reported, not part of the node's `_process`);
- decode: `codec.image_to_rgb` of that received Image (raw transport), or
  `codec.compressed_to_rgb` of a received jpeg CompressedImage (image_transport:=compressed);
- pipeline: `Pipeline.process` with a backend whose `_run` returns precomputed outputs of the
  engine's shapes, so resize, buffer and output stages are real and `infer_ms` is only the host
  staging of `Backend.infer` (bank padding); the pipeline overhead is total_ms - infer_ms;
- encode + "publish": cost and confidence (32FC1) and the embedding (32FC<D> via
  `codec.embedding_to_hwc`) filled into sensor_msgs Images exactly as `_process` does, then
  `serialize_message` of each. An approximation of `publish`: both convert the message to its
  C struct and serialize it to CDR, but `serialize_message` also copies the CDR into a Python
  `bytes` (about 0.6 ms for the 8.9 MB embedding), which `publish` does not, and the DDS
  hand-off that `publish` does (copies into the transport, fragmentation) is not measured;
- overlay / embedding_viz: `visualize.cost_overlay` / `embedding_colours` + fill + serialize,
  which the node only does while somebody subscribes;
- patch: a received 32FC1 patch_cost Image with 2 constant-cost regions ->
  `codec.image_to_array` -> `Pipeline.add_patch` (per patch message, `_on_patch`'s work).

The per-frame totals are sums per frame (then median / p99 over frames), not sums of medians.
Prints markdown table rows; copy them to bench/RESULTS.md with the hardware.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import time
from pathlib import Path

import cv2
import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from contrast_semask_ros import codec
from contrast_semask_ros.backends.base import Backend
from contrast_semask_ros.engine_spec import INPUT_NAMES, EngineSpec, TensorSpec
from contrast_semask_ros.pipeline import Pipeline, PipelineConfig
from contrast_semask_ros.visualize import cost_overlay, embedding_colours

_logger = logging.getLogger('bench_node')

FRAME_PERIOD_NS = 100_000_000  # 10 Hz camera stamps


def make_spec(height: int, width: int, dim: int, bank_size: int, stride: int = 4) -> EngineSpec:
    """An EngineSpec for the deployable graph at height x width, D = dim, Kmax = bank_size."""
    h, w = -(-height // stride), -(-width // stride)
    inputs = (TensorSpec('image', (1, height, width, 3), 'uint8'),
              TensorSpec('prototypes', (bank_size, dim), 'float32'),
              TensorSpec('prototype_costs', (bank_size,), 'float32'),
              TensorSpec('prototype_valid', (bank_size,), 'float32'),
              TensorSpec('temperature', (1,), 'float32'))
    assert tuple(t.name for t in inputs) == INPUT_NAMES
    outputs = (TensorSpec('embedding', (1, dim, h, w), 'float32'),
               TensorSpec('cost', (1, 1, height, width), 'float32'),
               TensorSpec('confidence', (1, 1, height, width), 'float32'))
    spec = EngineSpec(inputs=inputs, outputs=outputs, height=height, width=width, stride=stride,
                      embedding_dim=dim, bank_size=bank_size, mean=(123.675, 116.28, 103.53),
                      std=(58.395, 57.12, 57.375), class_names=(), checkpoint_sha256='bench',
                      opset=17, precision='fp32')
    spec.validate()
    return spec


class PrecomputedBackend(Backend):
    """A backend whose graph costs nothing: `_run` returns the same precomputed outputs (like a
    TensorRT backend, the arrays are reused from call to call)."""

    name = 'precomputed'

    def __init__(self, spec: EngineSpec, rng: np.random.Generator) -> None:
        super().__init__(spec)
        D, H, W = spec.embedding_dim, spec.height, spec.width
        h, w = spec.output('embedding').shape[2:]
        # smooth unit-norm embedding: neighbouring cells similar, like a real one
        coarse = rng.normal(size=(-(-h // 8), -(-w // 8), D)).astype(np.float32)
        hwc = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
        hwc += 0.3 * rng.normal(size=hwc.shape).astype(np.float32)
        hwc /= np.linalg.norm(hwc, axis=2, keepdims=True)
        self.embedding = np.ascontiguousarray(hwc.transpose(2, 0, 1))[None]  # 1, D, h, w
        # cost and confidence vary smoothly, like real ones (an i.i.d. random unknown mask
        # would make `cost[confidence < min_confidence] = nan` several times slower through
        # branch mispredictions); about a quarter of the pixels under min_confidence = 0.5
        self.cost = smooth_plane(rng, H, W, 0.0, 1.0)[None, None]
        self.confidence = smooth_plane(rng, H, W, 0.2, 1.0)[None, None]

    def _run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.embedding, self.cost, self.confidence


def smooth_plane(rng: np.random.Generator, height: int, width: int, low: float, high: float
                 ) -> np.ndarray:
    """(H, W) float32 in [low, high], bilinear from a random grid of 32-pixel cells."""
    coarse = rng.uniform(low, high, (-(-height // 32) + 1, -(-width // 32) + 1))
    return np.ascontiguousarray(cv2.resize(coarse.astype(np.float32), (width, height),
                                           interpolation=cv2.INTER_LINEAR))


def camera_image(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 RGB: a real photo (scikit-image's motorcycle_left.png) resized to the
    camera size, so the jpeg size and decode time are realistic; smooth noise if it is missing."""
    try:
        from importlib.resources import files

        path = Path(str(files('skimage.data') / 'motorcycle_left.png'))
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    except ImportError:
        bgr = None
    if bgr is None:
        _logger.info('motorcycle_left.png not found: using a synthetic image')
        coarse = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        rgb = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        noise = rng.normal(0, 6, rgb.shape)
        return np.clip(rgb + noise, 0, 255).astype(np.uint8)
    bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def header_at(stamp_ns: int) -> Header:
    header = Header(frame_id='camera')
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return header


def received(msg: object, msg_type: type) -> object:
    """The message as a subscriber gets it: serialized, then deserialized by rclpy."""
    return deserialize_message(serialize_message(msg), msg_type)


def patch_message(height: int, width: int, stamp_ns: int, rng: np.random.Generator) -> Image:
    """A 32FC1 patch_cost Image: NaN except 2 rectangles of constant cost (traversed patches)."""
    mask = np.full((height, width), np.nan, np.float32)
    for _ in range(2):
        ph, pw = int(rng.integers(80, 160)), int(rng.integers(120, 300))
        top, left = int(rng.integers(0, height - ph)), int(rng.integers(0, width - pw))
        mask[top:top + ph, left:left + pw] = rng.uniform(0.0, 1.0)
    return codec.fill_image(Image(), mask, '32FC1', header_at(stamp_ns))


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def run_config(camera: tuple[int, int], engine: tuple[int, int], args: argparse.Namespace,
               raw_bytes: bytes, jpeg_bytes: bytes
               ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Time every stage for `args.frames` frames after `args.warmup`; returns stage -> times
    (ms, one per frame; patch_* one per patch message) and a few facts for the report."""
    height, width = camera
    rng = np.random.default_rng(0)
    spec = make_spec(*engine, args.dim, args.bank_size)
    backend = PrecomputedBackend(spec, rng)
    pipeline = Pipeline(backend, PipelineConfig(bank_size=args.bank_size))
    # a full bank (the worst case for staging): random unit prototypes never merge
    protos = rng.normal(size=(args.bank_size, args.dim))
    for i, proto in enumerate(protos):
        pipeline.bank.add(proto, float(rng.uniform(0, 1)), i)
    assert len(pipeline.bank) == args.bank_size
    times: dict[str, list[float]] = {}

    def add(stage: str, ms: float) -> None:
        times.setdefault(stage, []).append(ms)

    stamp = 1_700_000_000 * 1_000_000_000
    for i in range(args.warmup + args.frames):
        keep = i >= args.warmup
        stamp += FRAME_PERIOD_NS
        # what the executor hands the image callback
        t0 = time.perf_counter()
        msg = deserialize_message(raw_bytes, Image)
        receive_ms = ms_since(t0)
        msg.header = header_at(stamp)
        cmsg = deserialize_message(jpeg_bytes, CompressedImage)
        # CostMapNode._process: decode
        faults0 = _minor_faults()
        t0 = time.perf_counter()
        rgb = codec.image_to_rgb(msg)
        decode_ms = ms_since(t0)
        t0 = time.perf_counter()
        rgb_jpeg = codec.compressed_to_rgb(cmsg)
        decode_jpeg_ms = ms_since(t0)
        assert rgb.shape == rgb_jpeg.shape == (height, width, 3)
        # pipeline
        result = pipeline.process(rgb, stamp)
        timings = result.timings
        # encode + publish (serialize), as in _process
        header = msg.header
        t0 = time.perf_counter()
        cost_msg = codec.fill_image(Image(), result.cost, '32FC1', header)
        t1 = time.perf_counter()
        cost_bytes = serialize_message(cost_msg)
        t2 = time.perf_counter()
        conf_msg = codec.fill_image(Image(), result.confidence, '32FC1', header)
        t3 = time.perf_counter()
        conf_bytes = serialize_message(conf_msg)
        t4 = time.perf_counter()
        hwc = codec.embedding_to_hwc(result.embedding)
        t5 = time.perf_counter()
        emb_msg = codec.fill_image(Image(), hwc, f'32FC{hwc.shape[2]}', header)
        t6 = time.perf_counter()
        emb_bytes = serialize_message(emb_msg)
        t7 = time.perf_counter()
        faults1 = _minor_faults()
        # optional outputs (only while subscribed)
        overlay = cost_overlay(rgb, result.cost, 1.0)
        t8 = time.perf_counter()
        overlay_bytes = serialize_message(codec.fill_image(Image(), overlay, 'rgb8', header))
        t9 = time.perf_counter()
        viz = embedding_colours(result.embedding)
        viz_bytes = serialize_message(codec.fill_image(Image(), viz, 'rgb8', header))
        t10 = time.perf_counter()
        faults2 = _minor_faults()
        if not keep:
            continue
        add('receive', receive_ms)
        add('decode', decode_ms)
        add('decode_jpeg', decode_jpeg_ms)
        add('resize', timings.resize_ms)
        add('infer', timings.infer_ms)
        add('buffer', timings.buffer_ms)
        add('output', timings.output_ms)
        add('pipeline', timings.total_ms - timings.infer_ms)
        add('fill_cost', (t1 - t0) * 1e3)
        add('ser_cost', (t2 - t1) * 1e3)
        add('fill_conf', (t3 - t2) * 1e3)
        add('ser_conf', (t4 - t3) * 1e3)
        add('hwc', (t5 - t4) * 1e3)
        add('fill_emb', (t6 - t5) * 1e3)
        add('ser_emb', (t7 - t6) * 1e3)
        add('publish', (t7 - t0) * 1e3)
        add('overlay_compute', (t8 - t7) * 1e3)
        add('overlay', (t9 - t7) * 1e3)
        add('embedding_viz', (t10 - t9) * 1e3)
        frame = decode_ms + timings.total_ms - timings.infer_ms + (t7 - t0) * 1e3
        add('total', frame)
        add('total_noemb', frame - (t7 - t4) * 1e3)
        add('total_jpeg', frame - decode_ms + decode_jpeg_ms)
        add('total_receive', frame + receive_ms)
        add('total_overlay', frame + (t9 - t7) * 1e3)
        add('total_all', frame + (t10 - t7) * 1e3)
        # the JPEG decode runs in this window too (its faults are counted; its time is not)
        add('faults', faults1 - faults0)
        add('faults_viz', faults2 - faults1)

    # _on_patch: patch messages drawn on buffered frames (a different callback thread in the
    # node; timed here on their own)
    stamps = pipeline.frames.stamps
    bank_before = len(pipeline.bank)
    for i in range(args.warmup + args.patches):
        pmsg = received(patch_message(height, width, stamps[i % len(stamps)], rng), Image)
        t0 = time.perf_counter()
        mask = codec.image_to_array(pmsg)
        if mask.ndim != 2 or mask.dtype.kind != 'f':
            raise RuntimeError(f'bad patch mask {mask.dtype} {mask.shape}')
        patch = pipeline.add_patch(mask, int(pmsg.header.stamp.sec) * 1_000_000_000
                                   + int(pmsg.header.stamp.nanosec))
        elapsed = ms_since(t0)
        if patch.added is None:
            raise RuntimeError(f'patch missed its frame: {patch.miss_reason}')
        if i >= args.warmup:
            add('patch', elapsed)
            add('patch_bank', patch.elapsed_ms)
    facts = {
        'raw_bytes': len(raw_bytes), 'jpeg_bytes': len(jpeg_bytes),
        'cost_bytes': len(cost_bytes), 'conf_bytes': len(conf_bytes),
        'emb_bytes': len(emb_bytes), 'overlay_bytes': len(overlay_bytes),
        'viz_bytes': len(viz_bytes), 'bank_before': bank_before,
        'unknown_fraction': float(np.isnan(result.cost).mean()),
        'buffered_frames': len(pipeline.frames)}
    backend.close()
    return {k: np.asarray(v) for k, v in times.items()}, facts


ROWS = (  # (key, label, counted in the per-frame total)
    ('receive', 'receive: `deserialize_message` rgb8 Image (executor, before the callback)', ''),
    ('decode', 'decode rgb8: `codec.image_to_rgb`', 'yes'),
    ('decode_jpeg', 'decode jpeg q90: `codec.compressed_to_rgb` (compressed transport)', 'alt'),
    ('resize', 'pipeline resize (camera -> engine)', 'yes'),
    ('infer', 'pipeline infer: `Backend.infer` staging only (graph precomputed)', 'no'),
    ('buffer', 'pipeline buffer (embedding copied into FrameBuffer)', 'yes'),
    ('output', 'pipeline output (cost/confidence to camera size, NaN mask)', 'yes'),
    ('pipeline', '**pipeline total - infer**', 'yes'),
    ('fill_cost', 'encode cost 32FC1 (`fill_image`)', 'yes'),
    ('ser_cost', 'serialize cost', 'yes'),
    ('fill_conf', 'encode confidence 32FC1 (`fill_image`)', 'yes'),
    ('ser_conf', 'serialize confidence', 'yes'),
    ('hwc', 'embedding to HWC (`embedding_to_hwc`)', 'yes'),
    ('fill_emb', 'encode embedding 32FC64 (`fill_image`)', 'yes'),
    ('ser_emb', 'serialize embedding', 'yes'),
    ('publish', '**encode + serialize, 3 outputs**', 'yes'),
    ('overlay_compute', 'cost_overlay (`visualize.cost_overlay` only)', ''),
    ('overlay', 'cost_overlay + fill + serialize (only while subscribed)', 'opt'),
    ('embedding_viz', 'embedding_viz + fill + serialize (only while subscribed)', 'opt'),
    ('total', '**total per frame: decode + (pipeline - infer) + encode/serialize**', ''),
    ('total_noemb', 'total per frame, publish_embedding:=false', ''),
    ('total_jpeg', 'total per frame, compressed (jpeg) transport', ''),
    ('total_receive', 'total per frame + receive deserialize', ''),
    ('total_overlay', 'total per frame + cost_overlay', ''),
    ('total_all', 'total per frame + cost_overlay + embedding_viz', ''),
    ('faults', 'minor page faults per frame (decode to serialize, jpeg decode included)', 'count'),
    ('faults_viz', 'minor page faults per frame, cost_overlay + embedding_viz', 'count'),
    ('patch', 'patch message: `image_to_array` + `Pipeline.add_patch` (2 regions)', 'per patch'),
)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--camera', default='544x1024', help='camera HxW')
    parser.add_argument('--engines', nargs='+', default=['544x1024', '512x960'],
                        help='engine input sizes HxW (one table column pair each)')
    parser.add_argument('--dim', type=int, default=64, help='embedding width D')
    parser.add_argument('--bank-size', type=int, default=256, help='Kmax (the bank is full)')
    parser.add_argument('--frames', type=int, default=200)
    parser.add_argument('--patches', type=int, default=200)
    parser.add_argument('--warmup', type=int, default=20)
    parser.add_argument('--jpeg-quality', type=int, default=90)
    args = parser.parse_args()
    height, width = (int(v) for v in args.camera.split('x'))
    engines = [tuple(int(v) for v in e.split('x')) for e in args.engines]

    rng = np.random.default_rng(0)
    rgb = camera_image(height, width, rng)
    image = codec.fill_image(Image(), rgb, 'rgb8', header_at(0))
    raw_bytes = serialize_message(image)
    compressed = codec.fill_compressed(CompressedImage(), rgb, 'jpeg', args.jpeg_quality,
                                       header_at(0))
    jpeg_bytes = serialize_message(compressed)
    check = deserialize_message(raw_bytes, Image)
    _logger.info('received Image.data is %s; image_to_rgb gives a %s view: %s',
                 type(check.data).__name__, 'read-only' if not
                 codec.image_to_rgb(check).flags.writeable else 'writeable',
                 np.shares_memory(codec.image_to_rgb(check), np.frombuffer(check.data,
                                                                           np.uint8)))

    results = []
    for engine in engines:
        times, facts = run_config((height, width), engine, args, raw_bytes, jpeg_bytes)
        results.append((engine, times, facts))
        _logger.info('engine %dx%d: %s', *engine, facts)

    load = os.getloadavg()
    _logger.info('camera %dx%d rgb8, D=%d, Kmax=%d (bank full), %d frames after %d warm-up, '
                 '%d patch messages; %s %s, %d CPUs, cv2 %s (%d threads), numpy %s, python '
                 '%s; load average %.2f %.2f %.2f', height, width, args.dim, args.bank_size,
                 args.frames, args.warmup, args.patches, platform.machine(),
                 _cpu_model(), os.cpu_count(), cv2.__version__, cv2.getNumThreads(),
                 np.__version__, platform.python_version(), *load)
    header = '| stage | in total | ' + ' | '.join(
        f'engine {h}x{w} median / p99 ms' for (h, w), _, _ in results) + ' |'
    _logger.info('')
    _logger.info(header)
    _logger.info('|---|---|' + '---|' * len(results))
    for key, label, counted in ROWS:
        cells = []
        for _, times, _ in results:
            values = times[key]
            digits = 0 if key.startswith('faults') else 2
            cells.append(f'{np.median(values):.{digits}f} / '
                         f'{np.percentile(values, 99):.{digits}f}')
        _logger.info('| %s | %s | %s |', label, counted, ' | '.join(cells))


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


if __name__ == '__main__':
    main()

"""`contrast-semask-replay`: evaluate the node's pipeline on a recorded bag, without ROS.

    contrast-semask-replay drive.bag --model model.onnx --image-topic /camera/image_raw \\
        --patch-cost-topic /traversal/patch_cost --out replay/ [--hold-out-every 5] [--realtime]
    contrast-semask-replay make-bag drive/ --frames 60 --size 272x512   # a synthetic drive

Reads rosbag2 (mcap or sqlite3, metadata versions 8 and 9) and ROS 1 bags through rosbags. The
messages go through the very Pipeline object the node uses, in recording order (the order the
node would have received them), as fast as possible or paced at the recorded rate. DIR gets,
written atomically (a temporary directory renamed at the end):
- `replay_bag/`: a rosbag2 (mcap) with the input camera and `<ns>/embedding`, `cost`, `confidence`,
  `cost_overlay`, each stamped like its input frame (for `ros2 bag play` and rviz);
- `report.json`: latency per stage (median, p95, p99), throughput, held-out cost accuracy
  (every k-th patch message is withheld from the bank and compared with the propagated cost in
  its regions: MAE, RMSE, Spearman), coverage of known pixels and bank size over time, per-pixel
  error against a ground-truth cost topic when the bag has one, skipped messages by reason;
- `latency.png`, `coverage.png`, `held_out.png`, `contact_sheet.png`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from contrast_semask_ros import codec
from contrast_semask_ros.pipeline import FrameResult, Pipeline, PipelineConfig

_logger = logging.getLogger('contrast_semask_replay')

OUTPUT_TOPICS = ('embedding', 'cost', 'confidence', 'cost_overlay')
MASK_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/Image')  # ROS 2 and ROS 1 names
IMAGE_TYPES = (*MASK_TYPES, 'sensor_msgs/msg/CompressedImage', 'sensor_msgs/CompressedImage')
SHEET_FRAMES = 6  # rows of the contact sheet


class ReplayError(RuntimeError):
    """A bag or topic that cannot be replayed; says what was expected and how to fix it."""


class RegionError(NamedTuple):
    measured: float  # the withheld patch's cost
    predicted: float  # mean propagated cost over its known pixels; NaN if all unknown
    known_fraction: float  # of the region's pixels


def held_out_regions(mask: np.ndarray, cost: np.ndarray) -> list[RegionError]:
    """Each distinct finite value of `mask` (H, W) is one measured region; compare it with the
    propagated `cost` (same size, NaN = unknown) over the region."""
    if mask.shape != cost.shape:
        raise ValueError(f'mask {mask.shape} and cost {cost.shape} must have one size')
    finite = np.isfinite(mask)
    regions = []
    for value in np.unique(mask[finite]):
        region = mask == value
        predicted = cost[region]
        known = np.isfinite(predicted)
        mean = float(predicted[known].mean()) if known.any() else math.nan
        regions.append(RegionError(float(value), mean, float(known.mean())))
    return regions


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for fewer than 2 distinct values."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind='mergesort')
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]  # average rank of each tie group


def accuracy(regions: Sequence[RegionError]) -> dict[str, float]:
    """MAE, RMSE and Spearman of predicted vs measured cost over regions with known pixels."""
    known = [r for r in regions if not math.isnan(r.predicted)]
    out: dict[str, float] = {'regions': len(regions), 'regions_unknown': len(regions) - len(known)}
    if known:
        measured = np.array([r.measured for r in known])
        predicted = np.array([r.predicted for r in known])
        err = predicted - measured
        out.update(mae=float(np.abs(err).mean()), rmse=float(np.sqrt((err ** 2).mean())),
                   spearman=spearman(measured, predicted))
    return out


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    median, p95, p99 = np.percentile(np.asarray(values, float), (50, 95, 99))
    return {'median': float(median), 'p95': float(p95), 'p99': float(p99), 'n': len(values)}


@dataclass
class Recorder:
    """Everything the report and the plots need, filled frame by frame."""

    latency: dict[str, list[float]] = field(default_factory=dict)
    coverage: list[float] = field(default_factory=list)  # known fraction per frame
    bank_sizes: list[int] = field(default_factory=list)
    frame_stamps: list[int] = field(default_factory=list)
    gt_abs_sum: float = 0.0  # over known, labelled pixels of every scored frame
    gt_sq_sum: float = 0.0
    gt_pixels: int = 0
    gt_known_of_labelled: list[float] = field(default_factory=list)  # per scored frame
    held_out: list[RegionError] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    patches_used: int = 0
    patches_held_out: int = 0
    # contact sheet rows: [stamp, camera, cost overlay, ground-truth overlay or None]
    sheet: list[list[Any]] = field(default_factory=list)

    def time(self, stage: str, ms: float) -> None:
        self.latency.setdefault(stage, []).append(ms)

    def frame(self, result: FrameResult, rgb: np.ndarray, overlay: np.ndarray,
              clock: tuple[float, float, float]) -> None:
        """One processed frame; clock = perf_counter at start, after decoding, at the end."""
        start, decoded, done = clock
        self.time('decode_ms', (decoded - start) * 1e3)
        for stage, ms in result.timings._asdict().items():
            self.time(stage, ms)
        self.time('encode_write_ms', (done - decoded) * 1e3 - result.timings.total_ms)
        self.time('frame_ms', (done - start) * 1e3)
        self.frame_stamps.append(result.stamp_ns)
        self.coverage.append(float(np.isfinite(result.cost).mean()))
        self.bank_sizes.append(result.bank_size)
        self.sheet.append([result.stamp_ns, rgb, overlay, None])
        if len(self.sheet) > 4 * SHEET_FRAMES:  # keep an evenly thinned sample
            self.sheet = self.sheet[::2]


class _Outputs:
    """The output rosbag2 (mcap): camera copy + pipeline outputs, stamped like the input."""

    def __init__(self, path: Path, camera_topic: str, camera_type: str, namespace: str) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.ts = get_typestore(Stores.ROS2_JAZZY)
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.camera = self.writer.add_connection(camera_topic, camera_type, typestore=self.ts)
        self.topics = {name: self.writer.add_connection(f'{namespace}/{name}',
                                                        'sensor_msgs/msg/Image',
                                                        typestore=self.ts)
                       for name in OUTPUT_TOPICS}

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        types = self.ts.types
        stamp = types['builtin_interfaces/msg/Time'](sec=stamp_ns // 1_000_000_000,
                                                     nanosec=stamp_ns % 1_000_000_000)
        return types['std_msgs/msg/Header'](stamp=stamp, frame_id=frame_id)

    def image(self, array: np.ndarray, encoding: str, header: Any) -> bytes:
        fields = codec.array_to_fields(array, encoding)
        msg = self.ts.types['sensor_msgs/msg/Image'](
            header=header, height=fields.height, width=fields.width, encoding=fields.encoding,
            is_bigendian=fields.is_bigendian, step=fields.step,
            data=np.frombuffer(fields.data, np.uint8))
        return self.ts.serialize_cdr(msg, 'sensor_msgs/msg/Image')

    def write(self, log_ns: int, camera_raw: bytes, result: FrameResult, frame_id: str,
              overlay: np.ndarray) -> None:
        header = self.header(result.stamp_ns, frame_id)
        self.writer.write(self.camera, log_ns, camera_raw)
        arrays = {'embedding': (codec.embedding_to_hwc(result.embedding),
                                f'32FC{result.embedding.shape[0]}'),
                  'cost': (result.cost, '32FC1'), 'confidence': (result.confidence, '32FC1'),
                  'cost_overlay': (overlay, 'rgb8')}
        for name, (array, encoding) in arrays.items():
            self.writer.write(self.topics[name], log_ns, self.image(array, encoding, header))

    def close(self) -> None:
        self.writer.close()


def _progress(total: int, enabled: bool) -> Any:
    """A tqdm bar over messages (tqdm is optional on a robot: without it, no bar)."""
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if not enabled:
        class _Silent:
            def update(self, n: int = 1) -> None: ...

            def close(self) -> None: ...

        return _Silent()
    return tqdm(total=total, desc='replay', unit='msg', dynamic_ncols=True)


def _topic_connections(reader: Any, topic: str, what: str, allowed: Sequence[str]) -> list[Any]:
    found = [c for c in reader.connections if c.topic == topic]
    if not found:
        available = sorted({f'{c.topic} ({c.msgtype})' for c in reader.connections})
        raise ReplayError(f'the bag has no {what} topic {topic!r}; it has: {available}')
    bad = [c.msgtype for c in found if c.msgtype not in allowed]
    if bad:
        raise ReplayError(f'{what} topic {topic!r} has type {bad[0]}, expected one of '
                          f'{list(allowed)}')
    return found


def replay(bag: Path, pipeline: Pipeline, out_dir: Path, image_topic: str,
           patch_topic: str, gt_topic: str | None = None, hold_out_every: int = 0,
           realtime: bool = False, namespace: str = '/cost_map', progress: bool = True,
           max_cost: float = 1.0) -> dict[str, Any]:
    """Replay `bag` through `pipeline`; write the output bag into `out_dir` (must not exist
    yet); return the report (plots and report.json are written by `write_report`)."""
    from rosbags.highlevel import AnyReader

    from contrast_semask_ros.visualize import cost_overlay

    if hold_out_every < 0:
        raise ReplayError(f'--hold-out-every must be >= 0 (0 = none), got {hold_out_every}')
    rec = Recorder()
    recent: dict[int, np.ndarray] = {}  # stamp -> cost at camera size (for held-out patches)
    reader = AnyReader([bag])
    try:
        reader.open()
    except Exception as err:  # rosbags raises several types for unreadable bags
        raise ReplayError(f'cannot read {bag} as a rosbag2 directory or ROS 1 bag: {err}') \
            from err
    try:
        cams = _topic_connections(reader, image_topic, 'image', IMAGE_TYPES)
        patches = _topic_connections(reader, patch_topic, 'patch cost', MASK_TYPES)
        gts = (_topic_connections(reader, gt_topic, 'ground-truth cost', MASK_TYPES)
               if gt_topic else [])
        compressed = 'Compressed' in cams[0].msgtype
        camera_type = cams[0].msgtype if reader.is2 else 'sensor_msgs/msg/Image'
        outputs = _Outputs(out_dir / 'replay_bag', image_topic, camera_type, namespace)
        total = sum(c.msgcount for c in (*cams, *patches, *gts))
        bar = _progress(total, progress)
        pending_gt: dict[int, np.ndarray] = {}  # ground truth that came before its frame
        scorer = _GroundTruth(rec, max_cost)
        n_patch = 0
        wall_start = time.perf_counter()
        first_log: int | None = None
        for conn, log_ns, raw in reader.messages(connections=[*cams, *patches, *gts]):
            bar.update()
            if realtime:
                first_log = log_ns if first_log is None else first_log
                delay = (log_ns - first_log) / 1e9 - (time.perf_counter() - wall_start)
                if delay > 0:
                    time.sleep(delay)
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception:  # noqa: BLE001 - a corrupt message is skipped and counted
                rec.skipped[f'undecodable {conn.topic}'] += 1
                continue
            if conn.topic == gt_topic:
                stamp = codec.header_stamp_ns(msg.header)
                try:
                    truth = codec.image_to_array(msg)
                except codec.CodecError:
                    rec.skipped[f'undecodable {conn.topic}'] += 1
                    continue
                if stamp in recent:
                    scorer.score(stamp, recent[stamp], truth)
                else:
                    pending_gt[stamp] = truth
                    while len(pending_gt) > pipeline.config.buffer_frames:
                        pending_gt.pop(next(iter(pending_gt)))
                continue
            if conn.topic == patch_topic:
                n_patch += 1
                _patch(pipeline, msg, rec, recent, hold_out=(
                    hold_out_every > 0 and n_patch % hold_out_every == 0))
                continue
            start = time.perf_counter()
            try:
                rgb = codec.compressed_to_rgb(msg) if compressed else codec.image_to_rgb(msg)
            except codec.CodecError as err:
                rec.skipped[f'image: {type(err).__name__}'] += 1
                _logger.debug('image skipped: %s', err)
                continue
            decoded = time.perf_counter()
            result = pipeline.process(rgb, codec.header_stamp_ns(msg.header))
            overlay = cost_overlay(rgb, result.cost, max_cost)
            if not reader.is2:  # a ROS 1 camera message: written as a ROS 2 rgb8 Image
                raw = outputs.image(rgb, 'rgb8', outputs.header(result.stamp_ns,
                                                                msg.header.frame_id))
            outputs.write(log_ns, raw, result, msg.header.frame_id, overlay)
            rec.frame(result, rgb, overlay, (start, decoded, time.perf_counter()))
            recent[result.stamp_ns] = result.cost
            while len(recent) > pipeline.config.buffer_frames:
                recent.pop(next(iter(recent)))
            if result.stamp_ns in pending_gt:
                scorer.score(result.stamp_ns, result.cost, pending_gt.pop(result.stamp_ns))
        bar.close()
        wall = time.perf_counter() - wall_start
        outputs.close()
    finally:
        reader.close()
    frames = len(rec.frame_stamps)
    report: dict[str, Any] = {
        'bag': str(bag), 'checkpoint_sha256': pipeline.backend.spec.checkpoint_sha256,
        'backend': pipeline.backend.name, 'engine_size': [pipeline.backend.spec.height,
                                                          pipeline.backend.spec.width],
        'frames': frames, 'patches': n_patch,
        'patches_used': rec.patches_used, 'patches_held_out': rec.patches_held_out,
        'wall_s': wall, 'throughput_fps': frames / wall if wall > 0 else 0.0,
        'realtime': realtime, 'max_cost': max_cost,
        'latency_ms': {stage: percentiles(v) for stage, v in rec.latency.items()},
        'held_out': accuracy(rec.held_out),
        'coverage': {'final': rec.coverage[-1] if rec.coverage else 0.0,
                     'mean': float(np.mean(rec.coverage)) if rec.coverage else 0.0},
        'bank_size_final': rec.bank_sizes[-1] if rec.bank_sizes else 0,
        'ground_truth': scorer.summary(),
        'skipped': dict(rec.skipped),
        'config': pipeline.config.__dict__,
    }
    report['_recorder'] = rec  # for the plots; removed by write_report
    return report


def _patch(pipeline: Pipeline, msg: Any, rec: Recorder, recent: dict[int, np.ndarray],
           hold_out: bool) -> None:
    try:
        mask = codec.image_to_array(msg)
        if mask.ndim != 2 or mask.dtype.kind != 'f':
            raise codec.CodecError(f'patch cost must be 32FC1, got {msg.encoding}')
    except codec.CodecError as err:
        rec.skipped[f'patch: {err}'[:80]] += 1
        return
    stamp = codec.header_stamp_ns(msg.header)
    if hold_out:
        cost = recent.get(stamp)
        if cost is None:
            rec.skipped['held-out patch without its frame'] += 1
            return
        from contrast_semask_ros.bank import mask_to_grid

        mask = mask_to_grid(mask, *cost.shape)  # the bank's own mask resampling
        rec.held_out.extend(held_out_regions(mask, cost))
        rec.patches_held_out += 1
        return
    start = time.perf_counter()
    result = pipeline.add_patch(mask, stamp)
    rec.time('patch_ms', (time.perf_counter() - start) * 1e3)
    if result.added is None:
        rec.skipped[f'patch: {result.miss_reason}'] += 1
    else:
        rec.patches_used += 1


class _GroundTruth:
    """Per-pixel |cost - truth| over known, labelled pixels (truth NaN = unlabelled), frame by
    frame, so nothing grows with the bag; adds the truth's overlay to contact-sheet rows."""

    def __init__(self, rec: Recorder, max_cost: float) -> None:
        self.rec, self.max_cost = rec, max_cost

    def score(self, stamp: int, cost: np.ndarray, truth: np.ndarray) -> None:
        rec = self.rec
        if truth.shape != cost.shape:
            rec.skipped['ground truth of another size'] += 1
            return
        labelled = np.isfinite(truth)
        known = labelled & np.isfinite(cost)
        err = cost[known] - truth[known]
        rec.gt_abs_sum += float(np.abs(err).sum())
        rec.gt_sq_sum += float((err ** 2).sum())
        rec.gt_pixels += int(known.sum())
        rec.gt_known_of_labelled.append(float(known.sum() / max(labelled.sum(), 1)))
        for row in rec.sheet:
            if row[0] == stamp:
                from contrast_semask_ros.visualize import cost_overlay

                row[3] = cost_overlay(row[1], truth, self.max_cost)

    def summary(self) -> dict[str, Any]:
        rec = self.rec
        if not rec.gt_known_of_labelled:
            return {}
        out: dict[str, Any] = {'frames': len(rec.gt_known_of_labelled),
                               'known_of_labelled': float(np.mean(rec.gt_known_of_labelled))}
        if rec.gt_pixels:
            out['mae'] = rec.gt_abs_sum / rec.gt_pixels
            out['rmse'] = math.sqrt(rec.gt_sq_sum / rec.gt_pixels)
        return out


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    """report.json and the PNG plots into out_dir."""
    rec: Recorder = report.pop('_recorder')
    (out_dir / 'report.json').write_text(json.dumps(report, indent=2, default=str))
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    stages = [s for s in ('decode_ms', 'resize_ms', 'infer_ms', 'buffer_ms', 'output_ms',
                          'encode_write_ms', 'patch_ms', 'frame_ms') if rec.latency.get(s)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.boxplot([rec.latency[s] for s in stages], showfliers=False)
    left.set_xticks(range(1, len(stages) + 1), [s.removesuffix('_ms') for s in stages],
                    rotation=30)
    left.set_ylabel('ms')
    left.set_title('latency per stage')
    for stage in ('infer_ms', 'frame_ms'):
        right.plot(rec.latency.get(stage, []), label=stage.removesuffix('_ms'))
    right.set_xlabel('frame')
    right.set_ylabel('ms')
    right.legend()
    right.set_title(f"throughput {report['throughput_fps']:.2f} frames/s")
    fig.tight_layout()
    fig.savefig(out_dir / 'latency.png', dpi=100)
    plt.close(fig)

    fig, left = plt.subplots(figsize=(8, 4))
    left.plot(rec.coverage, color='tab:blue')
    left.set_ylabel('known pixels (fraction)', color='tab:blue')
    left.set_ylim(0, 1.02)
    left.set_xlabel('frame')
    right = left.twinx()
    right.plot(rec.bank_sizes, color='tab:orange')
    right.set_ylabel('prototypes in the bank', color='tab:orange')
    left.set_title('coverage and bank growth')
    fig.tight_layout()
    fig.savefig(out_dir / 'coverage.png', dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    known = [r for r in rec.held_out if not math.isnan(r.predicted)]
    ax.scatter([r.measured for r in known], [r.predicted for r in known], s=12, alpha=0.6)
    ax.plot([0, report.get('max_cost', 1.0)], [0, report.get('max_cost', 1.0)], 'k--', lw=1)
    held = report['held_out']
    ax.set_title(f"held-out patches: MAE {held.get('mae', math.nan):.3f}, "
                 f"Spearman {held.get('spearman', math.nan):.2f}")
    ax.set_xlabel('measured cost')
    ax.set_ylabel('propagated cost (region mean)')
    fig.tight_layout()
    fig.savefig(out_dir / 'held_out.png', dpi=100)
    plt.close(fig)

    if rec.sheet:
        picks = np.linspace(0, len(rec.sheet) - 1, min(SHEET_FRAMES, len(rec.sheet)))
        rows = []
        for i in picks.round():
            _, rgb, overlay, truth = rec.sheet[int(i)]
            rows.append(np.concatenate([rgb, overlay] + ([truth] if truth is not None else []),
                                       axis=1))  # camera | propagated cost | ground truth
        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
        import cv2

        sheet = np.concatenate(rows, axis=0)
        cv2.imwrite(str(out_dir / 'contact_sheet.png'), sheet[..., ::-1])


def _atomic_dir(out: Path, overwrite: bool) -> Path:
    if out.exists() and not overwrite:
        raise ReplayError(f'{out} exists: choose another --out or pass --overwrite')
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f'.{out.name}.', dir=out.parent))


def _commit_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f'.{out.name}.old.', dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='contrast-semask-replay', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bag', type=Path, help='rosbag2 directory (mcap/sqlite3) or ROS 1 .bag')
    parser.add_argument('--model', type=Path, required=True, help='.engine, .onnx or .pt')
    parser.add_argument('--image-topic', required=True)
    parser.add_argument('--patch-cost-topic', required=True)
    parser.add_argument('--ground-truth-topic', default=None,
                        help='32FC1 ground-truth cost (the make-bag bags have /ground_truth/cost)')
    parser.add_argument('--out', type=Path, required=True, help='output directory')
    parser.add_argument('--overwrite', action='store_true')
    parser.add_argument('--hold-out-every', type=int, default=0,
                        help='withhold every k-th patch message from the bank and score it')
    parser.add_argument('--realtime', action='store_true', help='pace at the recorded rate')
    parser.add_argument('--backend', default='auto')
    parser.add_argument('--height', type=int, default=0, help='input size for a .pt model')
    parser.add_argument('--width', type=int, default=0, help='input size for a .pt model')
    parser.add_argument('--temperature', type=float, default=0.1)
    parser.add_argument('--min-confidence', type=float, default=0.5)
    parser.add_argument('--bank-size', type=int, default=0, help='0 = the model Kmax')
    parser.add_argument('--buffer-frames', type=int, default=30)
    parser.add_argument('--max-cost', type=float, default=1.0, help='red in the overlays')
    parser.add_argument('--no-progress', action='store_true')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    if argv[:1] == ['make-bag']:
        from contrast_semask_train.data.drive_bag import main as make_bag

        return make_bag(argv[1:])
    args = build_parser().parse_args(argv)
    from contrast_semask_ros.backends import BackendError, open_backend
    from contrast_semask_ros.pipeline import ConfigError

    try:
        tmp = _atomic_dir(args.out, args.overwrite)
    except ReplayError as err:
        _logger.error('%s', err)
        return 2
    try:
        backend = open_backend(args.model, args.backend, height=args.height, width=args.width,
                               bank_size=args.bank_size or 1024)
        with backend:
            config = PipelineConfig(temperature=args.temperature,
                                    min_confidence=args.min_confidence,
                                    bank_size=args.bank_size or backend.spec.bank_size,
                                    buffer_frames=args.buffer_frames)
            pipeline = Pipeline(backend, config)
            report = replay(args.bag, pipeline, tmp, args.image_topic, args.patch_cost_topic,
                            args.ground_truth_topic, args.hold_out_every, args.realtime,
                            progress=not args.no_progress, max_cost=args.max_cost)
        report['model'] = str(args.model)
        summary = summarize(report)
        write_report(report, tmp)
        _commit_dir(tmp, args.out)
    except (ReplayError, BackendError, ConfigError, OSError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _logger.error('%s', err)
        return 2
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _logger.info('wrote %s: %s', args.out, summary)
    return 0


def summarize(report: dict[str, Any]) -> str:
    """One line: frames, throughput, held-out and ground-truth error, coverage, latency."""
    held, gt = report['held_out'], report['ground_truth']
    infer = report['latency_ms'].get('infer_ms', {})
    parts = [f"{report['frames']} frames at {report['throughput_fps']:.2f} frames/s",
             f"infer median {infer.get('median', math.nan):.1f} ms",
             f"coverage {report['coverage']['final']:.0%} (final)",
             f"bank {report['bank_size_final']}"]
    if 'mae' in held:
        parts.append(f"held-out MAE {held['mae']:.3f} over {held['regions']} regions")
    if 'mae' in gt:
        parts.append(f"ground-truth MAE {gt['mae']:.3f} on {gt['known_of_labelled']:.0%} "
                     'of labelled pixels')
    return ', '.join(parts)


if __name__ == '__main__':
    sys.exit(main())

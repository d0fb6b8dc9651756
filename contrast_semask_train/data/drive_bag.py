"""Synthetic drive rosbags: camera frames, delayed traversal patch costs and ground-truth costs.

A bag written here stands in for a recording of the robot driving: every frame is a synthetic
scene (`render_scene`), and three topics carry it (DEFAULT_TOPICS):

    /camera/image_raw            sensor_msgs/msg/Image rgb8, or with compressed=True
    /camera/image_raw/compressed sensor_msgs/msg/CompressedImage (jpeg)
    /traversal/patch_cost        sensor_msgs/msg/Image 32FC1, NaN = no measurement
    /ground_truth/cost           sensor_msgs/msg/Image 32FC1, NaN on unlabelled seams

Frame i has header.stamp = start + i / fps; the camera and ground-truth messages are logged at
their stamp. The patch cost of frame i (the class costs under the robot's footprint, a trapezoid
at the bottom centre of the image) keeps frame i's stamp but is logged `patch_delay_s` later, as a
traversal measurement arrives once the robot has driven over the ground. Messages are written in
log-time order. The bag is a rosbag2 directory (metadata.yaml plus `<name>.mcap` or `<name>.db3`)
written with `rosbags`, and appears atomically.

    contrast-semask-data drive-bag bags/drive --mode patches --frames 60 --size 272x512 --seed 0

(The command's default mode, `sensors`, writes drive_sim.py's simulated drive with raw sensors.)

The bag's typestore, storage plugin and QoS come from `contrast_semask_ros.bagio`, the runtime's
one place for them (replay reads these bags with it).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np

from contrast_semask_ros import bagio
from contrast_semask_ros.codec import rgb_to_compressed_bytes

from .synth import render_scene
from .ycor import IGNORE_INDEX, YCOR_CLASSES, YCOR_COST_TABLE

if TYPE_CHECKING:
    from rosbags.interfaces import Connection
    from rosbags.typesys.store import Typestore

_logger = logging.getLogger(__name__)
T = TypeVar('T')

IMAGE_TYPE = bagio.IMAGE_TYPE
COMPRESSED_IMAGE_TYPE = bagio.COMPRESSED_IMAGE_TYPE
STORAGES = bagio.STORAGES
VERSIONS = bagio.VERSIONS
JPEG_QUALITY = 90


class DriveTopics(NamedTuple):
    image: str = '/camera/image_raw'  # sensor_msgs/msg/Image rgb8
    compressed_image: str = '/camera/image_raw/compressed'  # sensor_msgs/msg/CompressedImage
    patch_cost: str = '/traversal/patch_cost'  # sensor_msgs/msg/Image 32FC1
    ground_truth: str = '/ground_truth/cost'  # sensor_msgs/msg/Image 32FC1


DEFAULT_TOPICS = DriveTopics()


class DriveBagSpec(NamedTuple):
    """What to write. Frame i is the i-th `render_scene` of `np.random.default_rng(seed)`."""

    frames: int = 60
    height: int = 272
    width: int = 512
    fps: float = 10.0
    patch_delay_s: float = 0.5  # log time of a patch cost = its frame's stamp + this delay
    seed: int = 0
    storage: str = 'mcap'  # 'mcap' | 'sqlite3'
    version: int = 9  # rosbag2 metadata version: 8 (Humble/Iron readers) or 9 (Jazzy+)
    compressed: bool = False  # camera as a jpeg CompressedImage instead of a raw rgb8 Image
    frame_id: str = 'camera_optical'
    start_stamp_s: float = 1_700_000_000  # stamp of frame 0, seconds since the epoch
    jpeg_quality: int = JPEG_QUALITY
    topics: DriveTopics = DEFAULT_TOPICS


class DriveBagSummary(NamedTuple):
    path: Path
    frames: int  # camera (and ground-truth) messages
    patches: int  # patch-cost messages (a frame whose footprint is all seams has none)
    topics: dict[str, str]  # topic -> message type, in connection order
    storage: str
    version: int
    bytes: int  # total size of the bag directory


class DriveFrame(NamedTuple):
    index: int
    stamp_ns: int  # header.stamp of all three messages, ns since the epoch
    rgb: np.ndarray  # H, W, 3 uint8
    labels: np.ndarray  # H, W uint8 training ids, 255 = unlabelled seam
    cost: np.ndarray  # H, W float32 ground-truth cost, NaN at 255
    patch: np.ndarray  # H, W float32 cost under the footprint, NaN elsewhere and at 255


def class_costs(table: Mapping[str, float] = YCOR_COST_TABLE,
                classes: Sequence[str] = YCOR_CLASSES) -> np.ndarray:
    """(K,) float32 cost per training id, in the order of `classes` (label id = index)."""
    missing = [name for name in classes if name not in table]
    if missing:
        raise ValueError(f'cost table has no cost for {missing}; it names {sorted(table)}')
    return np.asarray([table[name] for name in classes], dtype=np.float32)


def _cost_lut(costs: Sequence[float] | np.ndarray) -> np.ndarray:
    """(256,) float32: costs[i] for ids below len(costs), NaN for the rest (255 included)."""
    costs = np.asarray(costs, dtype=np.float32).reshape(-1)
    if costs.size > IGNORE_INDEX:
        raise ValueError(f'at most {IGNORE_INDEX} class costs (id {IGNORE_INDEX} is the ignore '
                         f'index), got {costs.size}')
    lut = np.full(256, np.nan, dtype=np.float32)
    lut[:costs.size] = costs
    return lut


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f'labels must be a uint8 (H, W) array of training ids, got '
                         f'{labels.dtype} {labels.shape}')
    return labels


def ground_truth_cost(labels: np.ndarray, costs: Sequence[float] | np.ndarray) -> np.ndarray:
    """(H, W) uint8 training ids -> (H, W) float32 per-pixel cost; NaN where the label is 255
    (or any id without a cost)."""
    return _cost_lut(costs)[_check_labels(labels)]


def footprint(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) bool trapezoid at the bottom centre: the ground the robot is about to drive over.

    It spans the bottom ~25 % of the rows, ~40 % of the width at the bottom edge and ~18 % at its
    top edge (perspective); its centre, depth and width are jittered a little by `rng`.
    """
    centre = width * (0.5 + rng.uniform(-0.04, 0.04))
    top = height * (0.75 + rng.uniform(-0.03, 0.03))
    bottom_half = width * 0.2 * (1.0 + rng.uniform(-0.1, 0.1))
    top_half = 0.45 * bottom_half
    rows = np.arange(height, dtype=np.float32)[:, None] + 0.5  # H, 1
    cols = np.arange(width, dtype=np.float32)[None, :] + 0.5  # 1, W
    t = np.clip((rows - top) / max(height - top, 1e-6), 0.0, 1.0)  # H, 1: 0 at top, 1 at bottom
    half = top_half + t * (bottom_half - top_half)  # H, 1
    return (rows >= top) & (np.abs(cols - centre) <= half)  # H, W


def patch_mask(labels: np.ndarray, costs: Sequence[float] | np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """The traversal measurement of one frame: (H, W) float32, NaN = no measurement.

    Inside the robot's footprint (see `footprint`, jittered by `rng`) each pixel holds the cost
    of its ground-truth class, `costs[label]`; seams (255) and everything outside are NaN. A
    footprint over several classes gives several distinct values, one bank prototype each.
    """
    labels = _check_labels(labels)
    inside = footprint(labels.shape[0], labels.shape[1], rng)  # H, W
    return np.where(inside, ground_truth_cost(labels, costs), np.float32(np.nan))


def _to_ns(seconds: float) -> int:
    """Seconds since the epoch -> int ns, exact for integers (a float has no ns resolution)."""
    if isinstance(seconds, (int, np.integer)):
        return int(seconds) * 1_000_000_000
    frac, whole = math.modf(float(seconds))
    return int(whole) * 1_000_000_000 + round(frac * 1e9)


def frame_stamp_ns(spec: DriveBagSpec, index: int) -> int:
    """header.stamp (= camera log time) of frame `index`, ns since the epoch."""
    return _to_ns(spec.start_stamp_s) + round(index * 1e9 / spec.fps)


def _check_spec(spec: DriveBagSpec) -> None:
    problems = []
    if spec.frames < 1:
        problems.append(f'frames must be >= 1, got {spec.frames}')
    if spec.height < 16 or spec.width < 16:
        problems.append(f'frame size must be at least 16x16, got {spec.height}x{spec.width} '
                        '(height x width)')
    if not (math.isfinite(spec.fps) and spec.fps > 0):
        problems.append(f'fps must be positive, got {spec.fps}')
    if not (math.isfinite(spec.patch_delay_s) and spec.patch_delay_s >= 0):
        problems.append(f'patch_delay_s must be >= 0 (a measurement cannot arrive before its '
                        f'frame), got {spec.patch_delay_s}')
    if spec.storage not in STORAGES:
        problems.append(f'storage must be one of {STORAGES}, got {spec.storage!r}')
    if spec.version not in VERSIONS:
        problems.append(f'version must be one of {VERSIONS}, got {spec.version!r}')
    if not 1 <= spec.jpeg_quality <= 100:
        problems.append(f'jpeg_quality must be 1..100, got {spec.jpeg_quality}')
    if spec.start_stamp_s < 0:
        problems.append(f'start_stamp_s must be >= 0, got {spec.start_stamp_s}')
    if problems:
        raise ValueError('invalid drive bag spec: ' + '; '.join(problems))


def drive_frames(spec: DriveBagSpec,
                 costs: Sequence[float] | np.ndarray | None = None) -> Iterator[DriveFrame]:
    """The frames of the bag `spec` describes, without writing anything.

    Scenes come from one generator, `default_rng(spec.seed)`, called once per frame; footprint
    jitter from a second one, `default_rng([spec.seed, 1])`, so the scenes do not depend on it.
    """
    _check_spec(spec)
    costs = class_costs() if costs is None else np.asarray(costs, dtype=np.float32)
    scene_rng = np.random.default_rng(spec.seed)
    footprint_rng = np.random.default_rng([spec.seed, 1])
    for index in range(spec.frames):
        rgb, labels = render_scene(scene_rng, spec.height, spec.width)
        patch = patch_mask(labels, costs, footprint_rng)
        yield DriveFrame(index, frame_stamp_ns(spec, index), rgb, labels,
                         ground_truth_cost(labels, costs), patch)


# ---- writing --------------------------------------------------------------------------------


class _Messages:
    """Serializes the three messages of a frame with one typestore."""

    def __init__(self, typestore: Typestore, spec: DriveBagSpec):
        self.ts = typestore
        self.spec = spec
        self.types = typestore.types

    def _header(self, stamp_ns: int) -> Any:
        return bagio.header(self.ts, stamp_ns, self.spec.frame_id)

    def image(self, array: np.ndarray, encoding: str, stamp_ns: int) -> memoryview:
        return bagio.serialize_image(self.ts, array, encoding, self._header(stamp_ns))

    def compressed(self, rgb: np.ndarray, stamp_ns: int) -> memoryview:
        fmt, payload = rgb_to_compressed_bytes(rgb, 'jpeg', self.spec.jpeg_quality)
        msg = self.types[COMPRESSED_IMAGE_TYPE](header=self._header(stamp_ns), format=fmt,
                                                data=np.frombuffer(payload, np.uint8))
        return self.ts.serialize_cdr(msg, COMPRESSED_IMAGE_TYPE)


def _topic_types(spec: DriveBagSpec) -> dict[str, str]:
    camera = ((spec.topics.compressed_image, COMPRESSED_IMAGE_TYPE) if spec.compressed
              else (spec.topics.image, IMAGE_TYPE))
    topics = dict([camera, (spec.topics.ground_truth, IMAGE_TYPE),
                   (spec.topics.patch_cost, IMAGE_TYPE)])
    if len(topics) != 3:
        raise ValueError(f'the camera, ground-truth and patch-cost topics must differ, got '
                         f'{spec.topics}')
    return topics


def _write_bag(bag: Path, spec: DriveBagSpec, progress: bool) -> tuple[int, int]:
    """Write the rosbag2 directory `bag` (must not exist); returns (frames, patches)."""
    try:
        from rosbags.rosbag2 import Writer
    except ImportError as error:
        raise ImportError(f'writing a bag needs rosbags (pip install -r requirements/dev.txt): '
                          f'{error}') from error
    from tqdm import tqdm

    typestore = bagio.typestore(spec.version)
    messages = _Messages(typestore, spec)
    plugin = bagio.storage_plugin(spec.storage)
    delay_ns = round(spec.patch_delay_s * 1e9)
    camera_topic, truth_topic, patch_topic = _topic_types(spec)
    qos = bagio.reliable_qos()
    frames = patches = 0
    # Patch costs wait here until the log time reaches theirs; their log times increase, so a
    # FIFO keeps every write in log-time order (at equal times a patch goes before the frame).
    pending: collections.deque[tuple[int, Connection, memoryview]] = collections.deque()
    with Writer(bag, version=spec.version, storage_plugin=plugin) as writer:

        def write_pending(until_ns: float) -> None:
            while pending and pending[0][0] <= until_ns:
                log_ns, connection, raw = pending.popleft()
                writer.write(connection, log_ns, raw)

        connections = {topic: writer.add_connection(topic, msgtype, typestore=typestore,
                                                    offered_qos_profiles=qos)
                       for topic, msgtype in _topic_types(spec).items()}
        for frame in tqdm(drive_frames(spec), total=spec.frames, desc='drive-bag', unit='frame',
                          disable=not progress, dynamic_ncols=True):
            write_pending(frame.stamp_ns)
            camera = (messages.compressed(frame.rgb, frame.stamp_ns) if spec.compressed
                      else messages.image(frame.rgb, 'rgb8', frame.stamp_ns))
            writer.write(connections[camera_topic], frame.stamp_ns, camera)
            writer.write(connections[truth_topic], frame.stamp_ns,
                         messages.image(frame.cost, '32FC1', frame.stamp_ns))
            frames += 1
            if np.isfinite(frame.patch).any():
                pending.append((frame.stamp_ns + delay_ns, connections[patch_topic],
                                messages.image(frame.patch, '32FC1', frame.stamp_ns)))
                patches += 1
            else:
                _logger.debug('frame %d: the footprint is all seams, no patch cost', frame.index)
        write_pending(math.inf)
    return frames, patches


def _is_bag_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / 'metadata.yaml').is_file()


def _is_free(out: Path) -> bool:
    """Nothing at `out`, or an empty directory (which os.replace replaces atomically)."""
    if out.is_dir() and not out.is_symlink():
        return not any(out.iterdir())
    return not (out.exists() or out.is_symlink())


def _check_output(out: Path, overwrite: bool) -> None:
    """Nothing at `out`, an empty directory, or (with overwrite) a rosbag2 directory."""
    if _is_free(out):
        return
    if not overwrite:
        raise FileExistsError(f'{out} exists; choose a new path or pass overwrite=True '
                              '(--overwrite) to replace the bag there')
    if not _is_bag_dir(out):
        raise FileExistsError(f'{out} exists and is not a rosbag2 directory (no metadata.yaml); '
                              'refusing to replace it even with overwrite')


def _install(bag: Path, out: Path, trash: Path) -> None:
    """Move the finished `bag` to `out`. An existing bag at `out` is first renamed to `trash`
    (inside the temporary directory, removed with it) and put back if the second rename fails."""
    if _is_free(out):
        os.replace(bag, out)
        return
    os.replace(out, trash)
    try:
        os.replace(bag, out)
    except BaseException:
        os.replace(trash, out)
        raise


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob('*') if p.is_file())


def write_atomically(out: Path | str, overwrite: bool, write: Callable[[Path], T]) -> T:
    """Run `write(bag)` to write a rosbag2 directory `bag` (which does not exist yet) in a
    temporary directory next to `out`, then rename it to `out`; returns what `write` returned.

    `out` is never half-written and no temporary directory is left behind, on success or error.
    An existing `out` is refused (FileExistsError) unless it is an empty directory, or
    `overwrite` is set and it is a rosbag2 directory (checked before and after writing).
    """
    out = Path(out)
    _check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'{out.name}.tmp-', dir=out.parent))
    try:
        result = write(tmp / out.name)  # the storage file is named after the bag directory
        _check_output(out, overwrite)  # again: something may have appeared meanwhile
        _install(tmp / out.name, out, tmp / 'replaced')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def write_drive_bag(out: Path | str, spec: DriveBagSpec, *,
                    overwrite: bool = False, progress: bool | None = None) -> DriveBagSummary:
    """Write the synthetic drive bag `spec` as the rosbag2 directory `out`.

    The bag is written into a temporary directory next to `out` and renamed into place, so `out`
    is never half-written and no temporary directory is left behind, on success or error. An
    existing `out` is refused (FileExistsError) unless it is an empty directory, or `overwrite`
    is set and it is a rosbag2 directory. `progress` shows a tqdm bar (None: when stderr is a
    terminal). Layout: module docstring.
    """
    _check_spec(spec)
    _topic_types(spec)
    out = Path(out)
    if progress is None:
        progress = sys.stderr.isatty()
    frames, patches = write_atomically(out, overwrite,
                                       lambda bag: _write_bag(bag, spec, bool(progress)))
    summary = DriveBagSummary(out, frames, patches, _topic_types(spec), spec.storage,
                              spec.version, _tree_bytes(out))
    _logger.debug('wrote %s', summary)
    return summary

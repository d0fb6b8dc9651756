"""`contrast-semask-replay`: evaluate the node's pipeline on a recorded bag, without ROS.

    contrast-semask-replay drive.bag --model model.onnx --image-topic /camera/image_raw \\
        --patch-cost-topic /traversal/patch_cost --out replay/ [--hold-out-every 5] [--realtime] \\
        [--params config/cost_map.yaml] [--temperature 0.05 ...]

Reads rosbag2 (mcap or sqlite3, metadata version 5 of Humble to 9 of Jazzy) and ROS 1 bags
through rosbags; BAG is a bag directory, its metadata.yaml, a .mcap/.db3 storage file or a ROS 1
.bag. The messages go through the very Pipeline object the node uses, in recording order (the
order the node would have received them), as fast as possible or paced at the recorded rate; a
patch cost that comes before its frame is held until the frame has been replayed (one whose
frame never comes is counted as unmatched). The settings are the node's parameters: `--params`
reads its parameter file (config/cost_map.yaml), and each setting is also an option here that
overrides the file. OUT gets, written atomically (a temporary directory renamed at the end):
- `replay_bag/`: a rosbag2 (mcap) with the input camera and `<ns>/embedding`, `cost`, `confidence`,
  `cost_overlay`, each stamped like its input frame (for `ros2 bag play` and rviz);
- `report.json`: the parameters it ran with, latency per stage (median, p95, p99), throughput,
  held-out cost accuracy (every k-th patch message is withheld from the bank and compared with
  the propagated cost in its regions: MAE, RMSE, Spearman), coverage of known pixels and bank
  size over time, per-pixel error against a ground-truth cost topic when the bag has one,
  skipped messages by reason (also logged at the end at WARNING), how the bag was read;
- `latency.png`, `coverage.png`, `held_out.png`, `contact_sheet.png`;
- with the cost grid (`--grid`, on by default with odometry) `<ns>/cost_grid` in the bag (and
  `<ns>/cost_cloud` with `--cloud`), report.json's `world` and `bev` (the grid scored against
  the bag's ground-truth cost map, if any) and `bev.png` (replay_world).
Exit codes (EXIT_*): 0 ok; 2 bad usage or input (a bag, topic or model that cannot be read, no
image frame replayed, bad settings, an existing --out), one line naming what the bag has;
3 an environment problem (a missing optional package such as rosbags or onnxruntime, a full
disk). A synthetic drive bag to try it on: `contrast-semask-data drive-bag` (the training
tools).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from contrast_semask_ros import bagio, codec, params, replay_world
from contrast_semask_ros.atomic import atomic_directory, clean_stale
from contrast_semask_ros.backends import BackendError
from contrast_semask_ros.engine_spec import EngineSpecError
from contrast_semask_ros.exit_codes import (
    EXIT_BAD_INPUT,
    EXIT_ENVIRONMENT,
    EXIT_OK,
    is_environment_problem,
)
from contrast_semask_ros.frames import MISS_EMPTY, MISS_EVICTED, MISS_FUTURE
from contrast_semask_ros.metrics import Recorder
from contrast_semask_ros.params import ConfigError
from contrast_semask_ros.pipeline import Pipeline
from contrast_semask_ros.render import OutputRenderer
from contrast_semask_ros.replay_supervision import (
    SupervisedReplay,
    SupervisionSetup,
    SupervisionTopics,
)
from contrast_semask_ros.replay_world import WorldOptionError, WorldSetup
from contrast_semask_ros.report import ContactSheet, build_report, summarize, write_report
from contrast_semask_ros.supervision import params as supervision_params
from contrast_semask_ros.supervision.supervisor import SIGNALS

_logger = logging.getLogger('contrast_semask_replay')

SCOPES = ('model', 'pipeline', 'render')  # the parameters replay takes (params.PARAMS)



class ReplayError(ValueError):
    """A replay option that cannot work; says what is allowed."""


class ReplayResult(NamedTuple):
    report: dict[str, Any]  # what report.json holds (main adds 'model' and 'params')
    recorder: Recorder  # the per-frame numbers, for the plots
    sheet: ContactSheet  # the sampled frames, for contact_sheet.png
    bev: replay_world.BevPlot | None = None  # the cost grid's picture, for bev.png


def replay(bag: Path, pipeline: Pipeline, out_dir: Path, image_topic: str,
           patch_topic: str | None, gt_topic: str | None = None, hold_out_every: int = 0,
           realtime: bool = False, namespace: str = '/cost_map', progress: bool = True,
           max_cost: float = 1.0, supervision: SupervisionSetup | None = None,
           world: WorldSetup | None = None) -> ReplayResult:
    """Replay `bag` through `pipeline` in log-time order, writing the output bag to
    `out_dir/replay_bag`; the patch costs come from `patch_topic` or, with `supervision`, from
    the bag's IMU and odometry (replay_supervision). Every `hold_out_every`-th patch (or label)
    with a frame is scored instead of learnt. With `world`, the cost grid and cloud of each
    frame (replay_world). Returns the report and what the plots need (`report.write_report`
    writes them). BagError when no image frame could be replayed."""
    if hold_out_every < 0:
        raise ReplayError(f'--hold-out-every must be >= 0 (0 = none), got {hold_out_every}')
    if (patch_topic is None) == (supervision is None):
        raise ReplayError('give either a patch-cost topic or --supervision (not both)')
    with bagio.InputBag(bag) as reader:
        cams = reader.connections(image_topic, 'image', bagio.IMAGE_TYPES)
        wanted = [*cams, *_connections(reader, patch_topic, gt_topic, supervision)]
        world, world_connections = (replay_world.open_world(world, reader, supervision is not None)
                                    if world is not None else (None, []))
        wanted = list({id(c): c for c in [*wanted, *world_connections]}.values())  # once each
        compressed = 'Compressed' in cams[0].msgtype
        camera_type = cams[0].msgtype if reader.is_ros2 else bagio.IMAGE_TYPE
        with bagio.OutputBag(out_dir / 'replay_bag', image_topic, camera_type,
                             namespace) as outputs:
            run = _Run(pipeline, outputs, hold_out_every, max_cost, ros1=not reader.is_ros2,
                       supervision=supervision, world=world)
            clock = _Clock(realtime)
            read = _feed(reader, wanted, run, clock, (patch_topic, gt_topic), compressed,
                         progress)
            run.finish(_unread(wanted, read))
            wall_s = clock.elapsed_s()
            _require_frames(run, reader, image_topic, read[image_topic])
    _log_skipped(run.rec)
    report = build_report(bag, pipeline, run.rec, wall_s, realtime, max_cost,
                          reader.format._asdict())
    if run.supervised is not None:
        report['supervision'] = run.supervised.summary()
    bev_plot = None
    if run.world is not None:
        report['world'], bev = run.world.summary()
        if bev is not None:
            report['bev'] = bev
            bev_plot = run.world.plot(bag.name)
    return ReplayResult(report, run.rec, run.sheet, bev_plot)


def _connections(reader: bagio.InputBag, patch_topic: str | None, gt_topic: str | None,
                 supervision: SupervisionSetup | None) -> list[Any]:
    """The bag connections to read besides the camera: patch costs or the raw topics of
    self-supervision (and /tf_static when the bag has it), and the ground truth."""
    found = []
    if patch_topic is not None:
        found += reader.connections(patch_topic, 'patch cost', bagio.MASK_TYPES)
    if supervision is not None:
        for topic, what, allowed in supervision.topics.wanted():
            found += reader.connections(topic, what, allowed)
        found += reader.optional_connections(supervision.topics.tf_static)
    if gt_topic:
        found += reader.connections(gt_topic, 'ground-truth cost', bagio.MASK_TYPES)
    return found


def _feed(reader: bagio.InputBag, wanted: Sequence[Any], run: _Run, clock: _Clock,
          topics: tuple[str, str | None], compressed: bool, progress: bool) -> Counter[str]:
    """Every message of `wanted` to its _Run method in log-time order; messages read per
    topic. topics = (patch topic, ground-truth topic or None); the rest are camera images."""
    patch_topic, gt_topic = topics
    bar = _progress(sum(c.msgcount for c in wanted), progress)
    read: Counter[str] = Counter()
    for conn, log_ns, raw in reader.messages(wanted):
        bar.update()
        read[conn.topic] += 1
        run.log_ns = log_ns
        clock.wait_until(log_ns)
        msg = reader.decode(raw, conn)
        if msg is None:
            run.rec.skip(f'undecodable {conn.topic}')
        elif conn.topic == gt_topic:
            run.truth(msg, conn.topic)
        elif conn.topic == patch_topic:
            run.patch(msg)
        elif conn.topic in run.sensor_topics:
            run.raw_sensor(conn.topic, msg, log_ns)
        else:
            run.frame(msg, raw, log_ns, compressed)
    bar.close()
    return read


def _unread(connections: Sequence[Any], read: Counter[str]) -> dict[str, int]:
    """Messages the bag's index lists on a topic but reading did not return, by topic."""
    listed: Counter[str] = Counter()
    for conn in connections:
        listed[conn.topic] += conn.msgcount
    return {topic: n - read[topic] for topic, n in listed.items() if n > read[topic]}


def _require_frames(run: _Run, reader: bagio.InputBag, image_topic: str, read: int) -> None:
    """BagError when not one image frame was replayed: the report would describe nothing."""
    if run.rec.frame_stamps:
        return
    why = f'; last image error: {run.image_error}' if run.image_error else ''
    raise bagio.BagError(
        f'0 image frames replayed from {image_topic!r} of {reader.path} ({read} messages read'
        f'; skipped {run.rec.skip_summary() or "none"}){why}. The bag has: {reader.topics()}')


def _log_skipped(rec: Recorder) -> None:
    summary = rec.skip_summary()
    if summary:
        _logger.warning('skipped %s (report.json: skipped)', summary)
    else:
        _logger.info('no message skipped')


class _Run:
    """One replay's state: the costs of recent frames (for held-out patches and ground truth
    that arrives later), and the patches and ground truth that came before their frame; one
    method per topic."""

    def __init__(self, pipeline: Pipeline, outputs: bagio.OutputBag, hold_out_every: int,
                 max_cost: float, ros1: bool, supervision: SupervisionSetup | None = None,
                 world: WorldSetup | None = None) -> None:
        self.pipeline, self.outputs, self.ros1 = pipeline, outputs, ros1
        self.hold_out_every, self.max_cost = hold_out_every, max_cost
        self.rec = Recorder()
        self.sheet = ContactSheet(max_cost)
        self.renderer = OutputRenderer(max_cost)
        self.limit = pipeline.config.buffer_frames  # of each kind of message held
        self.tolerance_ns = round(pipeline.config.stamp_tolerance_s * 1e9)
        self.recent: dict[int, np.ndarray] = {}  # stamp -> cost (H, W) at camera size
        self.pending_truth: dict[int, np.ndarray] = {}  # stamp -> truth (H, W), frame not yet
        self.pending_patches: list[tuple[int, np.ndarray]] = []  # (stamp, mask), frame not yet
        self.replayed: list[int] = []  # sorted stamps of every replayed frame
        self.image_error = ''  # the last image that could not be decoded, and why
        self.truths: dict[int, np.ndarray] = {}  # ground truth of the frames the buffer holds
        self.costs: dict[int, np.ndarray] = {}  # cost of the frames the buffer holds
        self.supervised = (None if supervision is None else
                           SupervisedReplay(supervision, self.truths))
        self.frame_ids: dict[int, str] = {}  # stamp -> camera frame_id, of buffered frames
        self.world = None if world is None else replay_world.WorldReplay(world, outputs)
        self.sensor_topics = ((set(supervision.topics) - {None} if supervision else set())
                              | (self.world.topics if self.world else set()))
        self.log_ns = 0  # of the message being replayed

    def frame(self, msg: Any, raw: bytes, log_ns: int, compressed: bool) -> None:
        start = time.perf_counter()
        try:
            rgb = codec.decode_rgb(msg, 'compressed' if compressed else 'raw',
                                   self.pipeline.max_image_pixels)
        except codec.CodecError as err:
            self.image_error = str(err)
            self.rec.skip(f"image: {str(err).split(';')[0]}"[:100])
            _logger.debug('image skipped: %s', err)
            return
        decoded = time.perf_counter()
        result = self.pipeline.process(rgb, codec.header_stamp_ns(msg.header))  # H, W outputs
        rendered = self.renderer.render(result, rgb, bagio.OUTPUT_TOPICS)  # the node's outputs
        if self.ros1:  # a ROS 1 camera message: written as a ROS 2 rgb8 Image
            raw = self.outputs.camera_image(rgb, result.stamp_ns, msg.header.frame_id)
        self.outputs.write_frame(log_ns, raw, result.stamp_ns, msg.header.frame_id, rendered)
        self.rec.frame(result, (start, decoded, time.perf_counter()))
        overlay = np.frombuffer(rendered['cost_overlay'].data, np.uint8)  # a reused buffer
        self.sheet.add(result.stamp_ns, rgb, overlay.reshape(*rgb.shape).copy())
        bisect.insort(self.replayed, result.stamp_ns)
        _keep_last(self.recent, result.stamp_ns, result.cost, self.limit)
        if result.stamp_ns in self.pending_truth:
            truth = self.pending_truth.pop(result.stamp_ns)
            self._score(result.stamp_ns, result.cost, truth)
            self.truths[result.stamp_ns] = truth
        self._keep_buffered(result.stamp_ns, msg.header.frame_id)
        if self.world is not None:
            self.world.frame(result.stamp_ns, result.cost, result.confidence,
                             msg.header.frame_id, log_ns)
        if result.keyframe and self.supervised is not None:
            self.supervised.keyframe(result.stamp_ns)
        if self.pending_patches:
            self._match_patches(final=False)

    def _keep_buffered(self, stamp: int, frame_id: str) -> None:
        """Keep the costs and ground truth of the frames the pipeline buffer holds (a patch or
        label may still name them), forget the rest."""
        held = set(self.pipeline.frames.stamps)
        if stamp in held:
            self.frame_ids[stamp] = frame_id
            self.costs[stamp] = self.recent[stamp]
        for kept in (self.truths, self.frame_ids, self.costs):
            for old in [s for s in kept if s <= stamp and s not in held]:
                del kept[old]

    def raw_sensor(self, topic: str, msg: Any, log_ns: int) -> None:
        """A self-supervision or world input; the labels it makes are learnt (or held out) at
        once and written to the output bag's patch_cost."""
        if self.world is not None and topic in self.world.topics:
            self.world.message(topic, msg, log_ns)
        if self.supervised is None or topic not in self.supervised.topics:
            return
        if topic == self.supervised.topics.odom:  # the pipeline's keyframes by distance
            self.pipeline.add_odometry_message(msg)
        for label in self.supervised.message(topic, msg, log_ns):
            stamp = label.keyframe_stamp_ns
            self.outputs.write_mask(log_ns, 'patch_cost', label.mask, stamp,
                                    self.frame_ids.get(stamp, ''))
            self.rec.patches += 1
            self._learn_or_hold_out(label.mask, stamp, stamp)

    def patch(self, msg: Any) -> None:
        """Used (or held out) once its frame has been replayed: now, or when the frame comes."""
        try:
            mask = codec.image_to_array(msg)  # H, W float32, NaN = not measured
            if mask.ndim != 2 or mask.dtype.kind != 'f':
                raise codec.CodecError(f'patch cost must be 32FC1, got {msg.encoding}')
        except codec.CodecError as err:
            self.rec.skip(f'patch: {err}'[:80])
            return
        self.pending_patches.append((codec.header_stamp_ns(msg.header), mask))
        self._match_patches(final=False)

    def finish(self, unread: dict[str, int]) -> None:
        """The bag has ended: what is still held has no frame; count what was never read."""
        self._match_patches(final=True)
        if self.world is not None:
            self.world.finish(self.log_ns)
        if self.pending_truth:
            self.rec.skip('ground truth without its frame', len(self.pending_truth))
        for topic, n in unread.items():
            self.rec.skip(f'{topic}: listed in the bag but not read', n)

    def _match_patches(self, final: bool) -> None:
        """Use each held patch whose frame is buffered; keep those waiting for a newer frame
        (unless `final`); the others are unmatched."""
        waiting = []
        for stamp, mask in self.pending_patches:
            found = self.pipeline.find_frame(stamp)
            if found.frame is not None:
                self._use_patch(mask, stamp, found.frame.stamp_ns)
            elif found.reason in (MISS_FUTURE, MISS_EMPTY) and not final:
                waiting.append((stamp, mask))
            else:
                self._unmatched(stamp)
        for stamp, _ in waiting[:-self.limit]:
            self._unmatched(stamp)
        self.pending_patches = waiting[-self.limit:]

    def _unmatched(self, stamp: int) -> None:
        i = bisect.bisect_left(self.replayed, stamp - self.tolerance_ns)
        replayed = i < len(self.replayed) and self.replayed[i] <= stamp + self.tolerance_ns
        self.rec.unmatched_patch(f'patch: {MISS_EVICTED}' if replayed else
                                 'patch without its frame (dropped or not in the bag)')

    def _use_patch(self, mask: np.ndarray, stamp: int, frame_stamp: int) -> None:
        self.rec.patches += 1
        self._learn_or_hold_out(mask, stamp, frame_stamp)

    def _learn_or_hold_out(self, mask: np.ndarray, stamp: int, frame_stamp: int) -> None:
        if self.hold_out_every and self.rec.patches % self.hold_out_every == 0:
            cost = self.costs.get(frame_stamp, self.recent.get(frame_stamp))
            if cost is None:
                self.rec.skip('held-out patch without its frame')
            else:
                self.rec.held_out_patch(mask, cost, self.truths.get(frame_stamp))
            return
        start = time.perf_counter()
        result = self.pipeline.add_patch(mask, stamp)
        self.rec.time('patch_ms', (time.perf_counter() - start) * 1e3)
        if result.added is None:
            self.rec.skip(f'patch: {result.miss_reason}')
        else:
            self.rec.patches_used += 1

    def truth(self, msg: Any, topic: str) -> None:
        stamp = codec.header_stamp_ns(msg.header)
        try:
            truth = codec.image_to_array(msg)  # H, W float32, NaN = unlabelled
        except codec.CodecError:
            self.rec.skip(f'undecodable {topic}')
            return
        if stamp in self.recent:
            self._score(stamp, self.recent[stamp], truth)
            if stamp in self.pipeline.frames.stamps:
                self.truths[stamp] = truth
        else:
            if len(self.pending_truth) >= self.limit and stamp not in self.pending_truth:
                self.rec.skip('ground truth without its frame')
            _keep_last(self.pending_truth, stamp, truth, self.limit)

    def _score(self, stamp: int, cost: np.ndarray, truth: np.ndarray) -> None:
        if self.rec.ground_truth(cost, truth):
            self.sheet.add_truth(stamp, truth)


def _keep_last(kept: dict[int, np.ndarray], stamp: int, value: np.ndarray, limit: int) -> None:
    """kept[stamp] = value, then drop the oldest entries beyond `limit`."""
    kept[stamp] = value
    while len(kept) > limit:
        kept.pop(next(iter(kept)))


class _Clock:
    """Wall time since the start; with `realtime`, sleeps to follow the bag's log times."""

    def __init__(self, realtime: bool) -> None:
        self.realtime = realtime
        self.start = time.perf_counter()
        self.first_log_ns: int | None = None

    def wait_until(self, log_ns: int) -> None:
        if not self.realtime:
            return
        if self.first_log_ns is None:
            self.first_log_ns = log_ns
        delay = (log_ns - self.first_log_ns) / 1e9 - self.elapsed_s()
        if delay > 0:
            time.sleep(delay)

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.start


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


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'expected an integer >= 0 (0 = none), got {text!r}')
    return value


def build_parser() -> argparse.ArgumentParser:
    # 'resolve': --model takes over the --model-path option that params adds for model_path,
    # so that there is one option for the model (it must be added after params' options)
    parser = argparse.ArgumentParser(prog='contrast-semask-replay', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     conflict_handler='resolve')
    settings = parser.add_argument_group(
        'cost map parameters', "the node's parameters (README, ROS 2 node); each given one "
        'overrides the --params file, which overrides the defaults')
    params.add_cli_options(settings, SCOPES)  # type: ignore[arg-type]  # a group adds alike
    parser.add_argument('bag', type=Path, help='rosbag2 directory (mcap/sqlite3), its '
                        'metadata.yaml or a .mcap/.db3 storage file, or a ROS 1 .bag')
    parser.add_argument('--model', '--model-path', type=Path, required=True,
                        help='.engine, .onnx (each with its .json EngineSpec) or .pt')
    parser.add_argument('--params', type=Path, default=None, metavar='FILE',
                        help="the node's ROS 2 parameter file (config/cost_map.yaml); the "
                        'cost map parameter options override its values')
    parser.add_argument('--image-topic', required=True, help='Image or CompressedImage')
    parser.add_argument('--patch-cost-topic', default=None, help='32FC1 measured patch costs '
                        '(or --supervision)')
    parser.add_argument('--ground-truth-topic', default=None, help='32FC1 ground-truth cost '
                        '(the bags of contrast-semask-data drive-bag have /ground_truth/cost)')
    parser.add_argument('--out', type=Path, required=True, help='new output directory')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    parser.add_argument('--hold-out-every', type=_non_negative, default=0, metavar='K',
                        help='withhold every k-th patch message from the bank and score it')
    parser.add_argument('--realtime', action='store_true', help='pace at the recorded rate')
    parser.add_argument('--namespace', default='/cost_map', help='of the output topics')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    _add_supervision_options(parser)
    replay_world.add_options(parser)
    return parser


def _add_supervision_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        'self-supervision', 'label patches from the bag\'s IMU and odometry (the patch_cost '
        "node's core) instead of --patch-cost-topic; its parameters as options (README, "
        'patch_cost node), over the --supervision-params file')
    group.add_argument('--supervision', choices=SIGNALS, default=None,
                       help='the traversal-cost signal')
    group.add_argument('--odom-topic', default=None, help='nav_msgs/Odometry (default '
                       f'{replay_world.DEFAULT_ODOM_TOPIC}; given: the cost grid is on)')
    group.add_argument('--imu-topic', default='/imu/data', help='sensor_msgs/Imu')
    group.add_argument('--camera-info-topic', default='/camera/camera_info',
                       help='sensor_msgs/CameraInfo of the camera')
    group.add_argument('--cmd-vel-topic', default=None,
                       help='geometry_msgs/Twist or TwistStamped (signal velocity or both)')
    group.add_argument('--tf-static-topic', default='/tf_static',
                       help='static transforms: base frame -> camera (unless --camera-pose)')
    group.add_argument('--camera-pose', type=float, nargs=6, default=None,
                       metavar=('X', 'Y', 'Z', 'ROLL', 'PITCH', 'YAW'),
                       help='camera body frame in the base frame (wins over /tf_static)')
    group.add_argument('--base-frame', default=None,
                       help=f'robot base frame (TF) (default {replay_world.DEFAULT_BASE_FRAME})')
    group.add_argument('--footprint-truth-topic', default=None,
                       help="32FC1 masks of the simulator's footprint, for the footprint IoU "
                       '(/ground_truth/patch_cost in contrast-semask-data drive-bag bags)')
    group.add_argument('--truth-costs', action='store_true',
                       help='label costs from --ground-truth-topic instead of the IMU or '
                       'velocity: the same footprints at the same times with the true cost, '
                       'to measure what the measured cost loses')
    group.add_argument('--supervision-params', type=Path, default=None, metavar='FILE',
                       help="the patch_cost node's parameter file (config/patch_cost.yaml)")
    supervision_params.TABLE.add_cli_options(group, ('supervision',), skip=_SHARED)


# supervision options that replay does not offer: the signal is --supervision; the keyframes
# are the pipeline's (the cost map's options of the same names)
_SHARED = ('signal', *params.BY_NAME)


def resolve_supervision(args: argparse.Namespace) -> SupervisionSetup | None:
    """--supervision's settings: defaults, the --supervision-params file, the options."""
    if args.supervision is None:
        return None
    table = supervision_params.TABLE
    from_file = table.read_params_file(args.supervision_params) if args.supervision_params \
        else {}
    given = {k: v for k, v in table.cli_values(args).items() if k not in _SHARED}
    values = table.resolve(from_file, given, {'signal': args.supervision})
    topics = SupervisionTopics(args.odom_topic or replay_world.DEFAULT_ODOM_TOPIC,
                               args.imu_topic, args.camera_info_topic, args.cmd_vel_topic,
                               args.tf_static_topic, args.footprint_truth_topic)
    if args.truth_costs and not args.ground_truth_topic:
        raise ReplayError('--truth-costs needs --ground-truth-topic')
    if args.supervision in ('velocity', 'both') and not args.cmd_vel_topic:
        raise ReplayError(f'--supervision {args.supervision} needs --cmd-vel-topic (the '
                          'commanded speed)')
    pose = tuple(args.camera_pose) if args.camera_pose else None
    return SupervisionSetup(supervision_params.config_from_values(values), topics,
                            table.check('camera_pose', pose or ()) or None,
                            values.get('base_frame') or replay_world.DEFAULT_BASE_FRAME,
                            args.truth_costs)


def resolve_params(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the --params file, then the options given, then --model; checked."""
    from_file = params.read_params_file(args.params) if args.params else {}
    supervised = supervision_params.COST_MAP_OVERRIDES if args.supervision else {}
    return params.resolve(from_file, supervised, params.cli_values(args),
                          {'model_path': str(args.model)})


def exit_code(err: BaseException) -> int:
    """EXIT_ENVIRONMENT for a missing package (also behind a BackendError) or a full disk,
    else EXIT_BAD_INPUT."""
    if is_environment_problem(err) or isinstance(err.__cause__, ImportError):
        return EXIT_ENVIRONMENT
    return EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    """The console script; returns the exit code (EXIT_*; argparse exits 2 on bad options)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    clean_stale(args.out.parent, args.out.name)  # what a killed earlier replay left
    try:
        values = resolve_params(args)
        supervision = resolve_supervision(args)
        world = replay_world.setup_from_args(args, values, supervision)
        with (atomic_directory(args.out, args.overwrite) as tmp,
              contextlib.closing(Pipeline.open(values)) as pipeline):
            result = replay(args.bag, pipeline, tmp, args.image_topic, args.patch_cost_topic,
                            args.ground_truth_topic, args.hold_out_every, args.realtime,
                            args.namespace, progress=not args.no_progress,
                            max_cost=values['overlay_max_cost'], supervision=supervision,
                            world=world)
            report = {**result.report, 'model': str(args.model),
                      'params': {p.name: values[p.name] for p in params.PARAMS
                                 if p.scope in SCOPES}}
            write_report(tmp, report, result.recorder, result.sheet, result.bev)
    except (bagio.BagError, ReplayError, ConfigError, BackendError, EngineSpecError,
            WorldOptionError, OSError, ImportError) as err:
        _logger.error('%s: %s', type(err).__name__, ' '.join(str(err).splitlines()))
        return exit_code(err)
    _logger.info('wrote %s: %s', args.out, summarize(report))
    return EXIT_OK


if __name__ == '__main__':
    raise SystemExit(main())

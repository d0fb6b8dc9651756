"""`cost_map_node`: the thin rclpy adapter over contrast_semask_ros.pipeline.

    ros2 launch contrast_semask_ros cost_map.launch.py image:=/camera/image_raw \\
        patch_cost:=/traversal/patch_cost model_path:=/path/model.engine

Subscribes `image` (sensor_msgs/Image, or CompressedImage with image_transport:=compressed) and
`patch_cost` (32FC1 Image, NaN = no measurement, stamped like the camera frame it is drawn on);
publishes `cost` (32FC1, camera size, NaN = unknown), `confidence` (32FC1) and `embedding`
(32FC<D>, stride 4), `cost_overlay` / `embedding_viz` (rgb8) and `/diagnostics`; all but cost
and diagnostics are computed only while somebody subscribes; every output carries the input
image's header. Services `~/reset_bank`, `~/save_bank`, `~/load_bank` (std_srvs/Trigger; paths
from parameters).

`cost_map_lifecycle_node` is the managed variant: configure opens the model and creates the
topics, activate starts processing, deactivate pauses, cleanup frees the model.

Threads: the image callback only keeps the newest message (a frame it overwrites before the
worker took it counts as dropped); one worker thread runs the pipeline, so inference never
blocks patch-cost callbacks, and stale frames are dropped rather than queued. Bad input is
logged (throttled), counted in diagnostics, and never stops the node.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contrast_semask_ros import codec
from contrast_semask_ros.backends import BackendError, open_backend
from contrast_semask_ros.bank import BankError
from contrast_semask_ros.engine_spec import EngineSpecError
from contrast_semask_ros.pipeline import ConfigError, Pipeline, PipelineConfig, check_propagation
from contrast_semask_ros.stats import RuntimeStats
from contrast_semask_ros.visualize import cost_overlay, embedding_colours

try:  # rclpy and the messages come from the ROS 2 install; main() says so if they are missing
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
    from rclpy.executors import ExternalShutdownException
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

    try:
        from rclpy.event_handler import SubscriptionEventCallbacks
    except ImportError:  # Humble
        from rclpy.qos_event import SubscriptionEventCallbacks
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image
    from std_srvs.srv import Trigger

    _ROS_IMPORT_ERROR: ImportError | None = None
except ImportError as _err:  # pragma: no cover - exercised only without ROS
    _ROS_IMPORT_ERROR = _err
    Node = LifecycleNode = object  # type: ignore[assignment,misc]

THROTTLE_S = 5.0  # at most one log line per cause per this many seconds


class StartupError(RuntimeError):
    """The node cannot start with these parameters; the message says how to fix them."""


@dataclass(frozen=True)
class Param:
    default: Any
    description: str
    read_only: bool = True


# name -> (default, description). One table: declared with descriptors, documented in README.
PARAMETERS: dict[str, Param] = {
    'model_path': Param('', 'TensorRT .engine, ONNX .onnx (each with its .json EngineSpec) or '
                        'checkpoint .pt'),
    'backend': Param('auto', "auto (by extension), tensorrt, onnxruntime or torch"),
    'device': Param('auto', 'PyTorch backend: auto, cuda or cpu'),
    'precision': Param('auto', 'PyTorch backend: auto (fp16 on CUDA), fp32, fp16 or bf16'),
    'input_height': Param(0, 'engine input height; 0 = from the EngineSpec (required for .pt)'),
    'input_width': Param(0, 'engine input width; 0 = from the EngineSpec (required for .pt)'),
    'temperature': Param(0.1, 'propagation temperature (cosine units), (0, 10]', False),
    'min_confidence': Param(0.5, 'cost is NaN (unknown) where the best similarity to the bank '
                            'is below this, [-1, 1]', False),
    'bank_size': Param(256, 'prototypes kept (at most the engine Kmax)'),
    'min_patch_pixels': Param(16, 'smallest patch region, in stride-4 cells'),
    'merge_similarity': Param(0.98, 'merge a new prototype into one at least this similar; '
                              '0 = never'),
    'eviction': Param('oldest', 'bank eviction when full: oldest or least_used'),
    'buffer_frames': Param(30, 'past frames kept for patch costs that arrive later'),
    'buffer_age_s': Param(10.0, 'and for at most this many seconds'),
    'stamp_tolerance_s': Param(0.0, 'a patch matches the nearest frame within this; 0 = exact'),
    'image_transport': Param('raw', 'raw (sensor_msgs/Image) or compressed (CompressedImage)'),
    'publish_embedding': Param(True, 'publish the 32FC<D> embedding image'),
    'publish_confidence': Param(True, 'publish the confidence image'),
    'overlay_max_cost': Param(1.0, 'cost shown red in cost_overlay', False),
    'image_qos_depth': Param(1, 'image subscription depth (keep small: stale frames drop)'),
    'image_reliability': Param('best_effort', 'image subscription: best_effort or reliable'),
    'patch_qos_depth': Param(10, 'patch_cost subscription depth (reliable)'),
    'output_qos_depth': Param(1, 'output publishers depth'),
    'output_reliability': Param('reliable', 'output publishers: reliable or best_effort'),
    'bank_load_path': Param('', 'bank .npz preloaded at start and read by ~/load_bank'),
    'bank_save_path': Param('prototype_bank.npz', 'where ~/save_bank writes'),
    'diagnostics_period_s': Param(1.0, 'period of /diagnostics; 0 = none'),
}


class _CostMap:
    """The node's logic, shared by CostMapNode and CostMapLifecycleNode (mixed into an rclpy
    node): `_declare` once, then `_start` (open the model, create the ROS interfaces, start the
    worker) and `_stop` (the reverse, freeing the model's memory)."""

    def _declare(self) -> None:
        for name, param in PARAMETERS.items():
            self.declare_parameter(name, param.default, ParameterDescriptor(
                description=param.description, read_only=param.read_only))
        self.params = {name: self.get_parameter(name).value for name in PARAMETERS}
        self.add_on_set_parameters_callback(self._on_set_parameters)  # after the declarations
        self.pipeline: Pipeline | None = None
        self._handles: list[tuple[Any, Any]] = []  # (destroy function, entity) for _stop
        self._active = False

    def _start(self) -> None:
        p = self.params
        if not p['overlay_max_cost'] > 0:
            raise StartupError(f"overlay_max_cost must be > 0, got {p['overlay_max_cost']}")
        if p['image_transport'] not in ('raw', 'compressed'):
            raise StartupError(f"image_transport must be 'raw' or 'compressed', got "
                               f"{p['image_transport']!r}")
        image_qos = _qos(p['image_qos_depth'], p['image_reliability'], 'image_reliability')
        out_qos = _qos(p['output_qos_depth'], p['output_reliability'], 'output_reliability')
        patch_qos = _qos(p['patch_qos_depth'], 'reliable', 'patch_qos_depth')
        self.pipeline = self._open_pipeline(p)
        self.stats = RuntimeStats()
        self.stats.gauge('bank_size', 0)
        self._last_size: tuple[int, int] | None = None
        self._latest: tuple[Any, float] | None = None  # (message, receive time)
        self._wake = threading.Condition()
        self._running = True

        image_type = Image if p['image_transport'] == 'raw' else CompressedImage
        # a QoS mismatch would otherwise be silent "no output" (peers.md 1.9); samples DDS lost
        # (large best-effort frames) are counted in diagnostics
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos,
                                            message_lost=self._on_message_lost)
        keep = self._keep
        keep(self.destroy_subscription, self.create_subscription(
            image_type, 'image', self._on_image, image_qos, event_callbacks=events))
        keep(self.destroy_subscription, self.create_subscription(
            Image, 'patch_cost', self._on_patch, patch_qos))
        self.pub_cost = keep(self.destroy_publisher, self.create_publisher(Image, 'cost', out_qos))
        self.pub_embedding = (keep(self.destroy_publisher, self.create_publisher(
            Image, 'embedding', out_qos)) if p['publish_embedding'] else None)
        self.pub_confidence = (keep(self.destroy_publisher, self.create_publisher(
            Image, 'confidence', out_qos)) if p['publish_confidence'] else None)
        self.pub_overlay = keep(self.destroy_publisher, self.create_publisher(
            Image, 'cost_overlay', out_qos))
        self.pub_viz = keep(self.destroy_publisher, self.create_publisher(
            Image, 'embedding_viz', out_qos))
        self.pub_diag = keep(self.destroy_publisher, self.create_publisher(
            DiagnosticArray, '/diagnostics', 10))
        for name, callback in (('~/reset_bank', self._on_reset), ('~/save_bank', self._on_save),
                               ('~/load_bank', self._on_load)):
            keep(self.destroy_service, self.create_service(Trigger, name, callback))
        if p['diagnostics_period_s'] > 0:
            keep(self.destroy_timer, self.create_timer(p['diagnostics_period_s'],
                                                       self._publish_diagnostics))
        self._worker = threading.Thread(target=self._work, name='cost_map_worker', daemon=True)
        self._worker.start()
        spec = self.pipeline.backend.spec
        self.get_logger().info(
            f"ready: {p['model_path']} on {self.pipeline.backend.name} ({spec.width}x"
            f"{spec.height}, D={spec.embedding_dim}, Kmax={spec.bank_size}, {spec.precision}); "
            f"{p['image_transport']} images on {self.resolve_topic_name('image')}, patch costs "
            f"on {self.resolve_topic_name('patch_cost')}")

    def _keep(self, destroy: Any, entity: Any) -> Any:
        self._handles.append((destroy, entity))
        return entity

    def _stop(self) -> None:
        """Stop the worker, destroy the ROS interfaces, release the backend (idempotent)."""
        if self.pipeline is None:
            return
        with self._wake:
            self._running = False
            self._wake.notify()
        self._worker.join(timeout=10.0)
        for destroy, entity in reversed(self._handles):
            destroy(entity)
        self._handles.clear()
        self.pipeline.backend.close()
        self.pipeline = None

    # -- start-up --------------------------------------------------------------------------
    def _open_pipeline(self, p: dict[str, Any]) -> Pipeline:
        model = Path(p['model_path']).expanduser()
        if not p['model_path'] or not model.is_file():
            raise StartupError(f"model_path {p['model_path']!r} is not a file: pass the .engine,"
                               ' .onnx or .pt to run (model_path:=/path/model.engine)')
        try:
            backend = open_backend(model, p['backend'], height=p['input_height'],
                                   width=p['input_width'], bank_size=p['bank_size'],
                                   device=p['device'], precision=p['precision'])
        except (BackendError, EngineSpecError, OSError) as err:
            raise StartupError(f'cannot load {model}: {err}') from err
        spec = backend.spec
        for name, want in (('input_height', spec.height), ('input_width', spec.width)):
            if p[name] not in (0, want):
                backend.close()
                raise StartupError(f'{name}={p[name]} but {model.name} was built for '
                                   f'{spec.width}x{spec.height}: set 0 to use the model size, '
                                   'or export the model for the size you want')
        try:
            config = PipelineConfig(
                temperature=p['temperature'], min_confidence=p['min_confidence'],
                bank_size=p['bank_size'], min_patch_pixels=p['min_patch_pixels'],
                merge_similarity=p['merge_similarity'], eviction=p['eviction'],
                buffer_frames=p['buffer_frames'], buffer_age_s=p['buffer_age_s'],
                stamp_tolerance_s=p['stamp_tolerance_s'])
            pipeline = Pipeline(backend, config)
            if p['bank_load_path']:
                pipeline.bank.load(p['bank_load_path'])
        except (ConfigError, BankError, OSError) as err:
            backend.close()
            raise StartupError(str(err)) from err
        return pipeline

    # -- callbacks -------------------------------------------------------------------------
    def _on_image(self, msg: Any) -> None:
        if not self._active:
            return  # a configured but inactive lifecycle node ignores frames
        self.stats.count('frames_in')
        with self._wake:
            if self._latest is not None:
                self.stats.count('frames_dropped')  # the worker was still busy with one
            self._latest = (msg, time.monotonic())
            self._wake.notify()

    def _on_incompatible_qos(self, status: Any) -> None:
        self.stats.count('image_qos_incompatible', status.total_count_change)
        self.get_logger().warn(
            f"a publisher on {self.resolve_topic_name('image')} offers a QoS this subscription "
            f'cannot match (policy id {status.last_policy_kind}); with image_reliability='
            f"{self.params['image_reliability']}, set image_reliability: best_effort (matches "
            'any camera) or make the camera publish reliably', throttle_duration_sec=THROTTLE_S)

    def _on_message_lost(self, status: Any) -> None:
        self.stats.count('frames_lost_in_transport', status.total_count_change)

    def _work(self) -> None:
        while True:
            with self._wake:
                while self._latest is None and self._running:
                    self._wake.wait(0.5)
                if not self._running:
                    return
                msg, received = self._latest
                self._latest = None
            try:
                self._process(msg, received)
            except Exception as err:  # noqa: BLE001 - a bad frame must never stop the node
                self.stats.count('frame_errors')
                self.get_logger().error(f'frame {codec.header_stamp_ns(msg.header)} failed: {err}',
                                        throttle_duration_sec=THROTTLE_S)

    def _process(self, msg: Any, received: float) -> None:
        start = time.perf_counter()
        try:
            rgb = (codec.image_to_rgb(msg) if self.params['image_transport'] == 'raw'
                   else codec.compressed_to_rgb(msg))
        except codec.CodecError as err:
            self.stats.count('frames_rejected')
            self.get_logger().warn(f'image rejected: {err}', throttle_duration_sec=THROTTLE_S)
            return
        size = rgb.shape[:2]
        if self._last_size not in (None, size):
            self.stats.count('size_changes')
            self.get_logger().info(f'camera size changed {self._last_size} -> {size}',
                                   throttle_duration_sec=THROTTLE_S)
        self._last_size = size
        decoded = time.perf_counter()
        stamp = codec.header_stamp_ns(msg.header)
        result = self.pipeline.process(rgb, stamp)
        processed = time.perf_counter()
        header = msg.header
        self.pub_cost.publish(codec.fill_image(Image(), result.cost, '32FC1', header))
        # confidence and the 8.9 MB embedding (D = 64 at 544x1024) cost ~7 ms to encode and
        # serialise: skipped while nobody subscribes (bench/RESULTS.md)
        if _subscribed(self.pub_confidence):
            self.pub_confidence.publish(
                codec.fill_image(Image(), result.confidence, '32FC1', header))
        if _subscribed(self.pub_embedding):
            hwc = codec.embedding_to_hwc(result.embedding)
            self.pub_embedding.publish(
                codec.fill_image(Image(), hwc, f'32FC{hwc.shape[2]}', header))
        if _subscribed(self.pub_overlay):
            overlay = cost_overlay(rgb, result.cost, self.params['overlay_max_cost'])
            self.pub_overlay.publish(codec.fill_image(Image(), overlay, 'rgb8', header))
        if _subscribed(self.pub_viz):
            viz = embedding_colours(result.embedding)
            self.pub_viz.publish(codec.fill_image(Image(), viz, 'rgb8', header))
        done = time.perf_counter()
        self.stats.frame_done()
        self.stats.count('frames_out')
        for stage, ms in result.timings._asdict().items():
            self.stats.latency(stage, ms)
        self.stats.latency('decode_ms', (decoded - start) * 1e3)
        self.stats.latency('publish_ms', (done - processed) * 1e3)
        self.stats.latency('callback_to_publish_ms', (time.monotonic() - received) * 1e3)
        self.stats.gauge('input_stamp_age_s', (self.get_clock().now().nanoseconds - stamp) / 1e9)
        self.stats.gauge('bank_size', len(self.pipeline.bank))

    def _on_patch(self, msg: Any) -> None:
        self.stats.count('patches_in')
        try:
            mask = codec.image_to_array(msg)
            if mask.ndim != 2 or mask.dtype.kind != 'f':
                raise codec.CodecError(f'patch_cost must be a 32FC1 (or 64FC1) image, got '
                                       f'{msg.encoding}')
            result = self.pipeline.add_patch(mask, codec.header_stamp_ns(msg.header))
        except (codec.CodecError, BankError, ValueError) as err:
            self.stats.count('patches_rejected')
            self.get_logger().warn(f'patch_cost rejected: {err}',
                                   throttle_duration_sec=THROTTLE_S)
            return
        self.stats.latency('patch_ms', result.elapsed_ms)
        if result.added is None:
            self.stats.count('patch_misses')
            self.get_logger().warn(
                f'patch_cost {result.stamp_ns} has no frame: {result.miss_reason} (buffer holds'
                f' {len(self.pipeline.frames)} frames; see buffer_frames, buffer_age_s, '
                'stamp_tolerance_s)', throttle_duration_sec=THROTTLE_S)
            return
        added = result.added
        self.stats.count('prototypes_added', added.added)
        self.stats.count('prototypes_merged', added.merged)
        self.stats.count('prototypes_evicted', added.evicted)
        self.stats.count('patch_regions_too_small', added.skipped_small)
        if added.skipped_invalid:
            self.stats.count('patch_regions_invalid', added.skipped_invalid)
            self.get_logger().warn(f'patch_cost {result.stamp_ns}: {added.skipped_invalid} '
                                   'region(s) with infinite cost or beyond the region cap '
                                   'skipped', throttle_duration_sec=THROTTLE_S)
        if added.added + added.merged == 0:
            self.stats.count('patches_empty')
        self.stats.gauge('bank_size', len(self.pipeline.bank))

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        values = {p.name: p.value for p in params}
        temperature = values.get('temperature', self.params['temperature'])
        min_confidence = values.get('min_confidence', self.params['min_confidence'])
        overlay_max = values.get('overlay_max_cost', self.params['overlay_max_cost'])
        try:
            check_propagation(float(temperature), float(min_confidence))
            if not float(overlay_max) > 0:
                raise ConfigError(f'overlay_max_cost must be > 0, got {overlay_max}')
        except (ConfigError, TypeError, ValueError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        self.params.update(temperature=float(temperature), min_confidence=float(min_confidence),
                           overlay_max_cost=float(overlay_max))
        if self.pipeline is not None:  # else used when a lifecycle node is configured
            self.pipeline.set_propagation(float(temperature), float(min_confidence))
        return SetParametersResult(successful=True)

    def _on_reset(self, _request: Any, response: Any) -> Any:
        self.pipeline.reset()
        self.stats.gauge('bank_size', 0)
        response.success, response.message = True, 'bank and frame buffer cleared'
        return response

    def _on_save(self, _request: Any, response: Any) -> Any:
        try:
            path = self.pipeline.bank.save(self.params['bank_save_path'])
            response.success = True
            response.message = f'saved {len(self.pipeline.bank)} prototypes to {path}'
        except (BankError, OSError) as err:
            response.success, response.message = False, str(err)
        return response

    def _on_load(self, _request: Any, response: Any) -> Any:
        path = self.params['bank_load_path']
        if not path:
            response.success, response.message = False, 'bank_load_path is not set'
            return response
        try:
            n = self.pipeline.bank.load(path)
            response.success, response.message = True, f'loaded {n} prototypes from {path}'
        except (BankError, OSError) as err:
            response.success, response.message = False, str(err)
        self.stats.gauge('bank_size', len(self.pipeline.bank))
        return response

    def _publish_diagnostics(self) -> None:
        snapshot = self.stats.snapshot()
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name()}: cost map',
                                  hardware_id=self.pipeline.backend.name)
        errors = sum(snapshot.get(k, 0) for k in ('frames_rejected', 'frame_errors',
                                                   'patches_rejected'))
        status.level = DiagnosticStatus.WARN if errors else DiagnosticStatus.OK
        status.message = (f"{snapshot['rate_hz']:.1f} Hz, bank {int(snapshot['bank_size'])}"
                          + (f', {int(errors)} bad inputs' if errors else ''))
        status.values = [KeyValue(key=k, value=f'{v:.6g}') for k, v in snapshot.items()]
        self.pub_diag.publish(DiagnosticArray(header=_header_now(self), status=[status]))



class CostMapNode(_CostMap, Node):
    """`cost_map_node`: starts working as soon as it is constructed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('cost_map', **kwargs)
        self._declare()
        self._start()
        self._active = True

    def close(self) -> None:
        self._stop()


class CostMapLifecycleNode(_CostMap, LifecycleNode):
    """`cost_map_lifecycle_node`: a managed node. configure opens the model and creates the
    topics and services, activate starts processing frames, deactivate pauses, cleanup frees
    the model (GPU memory), shutdown from any state."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('cost_map', **kwargs)
        self._declare()

    def on_configure(self, state: Any) -> TransitionCallbackReturn:
        try:
            self._start()
        except StartupError as err:
            self.get_logger().error(f'cannot configure: {err}')
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: Any) -> TransitionCallbackReturn:
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: Any) -> TransitionCallbackReturn:
        self._active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: Any) -> TransitionCallbackReturn:
        self._stop()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: Any) -> TransitionCallbackReturn:
        self._active = False
        self._stop()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        self._active = False
        self._stop()


def _qos(depth: int, reliability: str, name: str) -> QoSProfile:
    policies = {'reliable': ReliabilityPolicy.RELIABLE,
                'best_effort': ReliabilityPolicy.BEST_EFFORT}
    if reliability not in policies or depth < 1:
        raise StartupError(f'{name}: reliability must be reliable or best_effort and depth '
                           f'>= 1, got {reliability!r}, {depth}')
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=policies[reliability], durability=DurabilityPolicy.VOLATILE)


def _subscribed(publisher: Any) -> bool:
    return publisher is not None and publisher.get_subscription_count() > 0


def _header_now(node: Node) -> Any:
    from std_msgs.msg import Header

    return Header(stamp=node.get_clock().now().to_msg())


def main(argv: list[str] | None = None) -> int:
    """Console script `cost_map_node`. Exit codes: 0 (stopped, SIGINT included), 1 (could not
    start: the log says why), 2 (no rclpy)."""
    return _run(lambda: CostMapNode(), argv)


def lifecycle_main(argv: list[str] | None = None) -> int:
    """Console script `cost_map_lifecycle_node`: the managed variant (drive it with
    `ros2 lifecycle set /cost_map configure` / `activate`, or a lifecycle manager)."""
    return _run(lambda: CostMapLifecycleNode(), argv)


def _run(make_node: Any, argv: list[str] | None) -> int:
    if _ROS_IMPORT_ERROR is not None:
        sys.stderr.write(f'cost_map_node needs ROS 2 (rclpy, sensor_msgs, diagnostic_msgs, '
                         f'std_srvs): source your ROS 2 setup.bash first ({_ROS_IMPORT_ERROR})\n')
        return 2
    logging.basicConfig(level=logging.INFO, format='[%(levelname)s] [%(name)s]: %(message)s')
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = None
    code = 0
    try:
        node = make_node()
        rclpy.spin(node)  # callbacks here; inference in the node's worker thread
    except StartupError as err:
        rclpy.logging.get_logger('cost_map').fatal(f'not starting: {err}')
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())

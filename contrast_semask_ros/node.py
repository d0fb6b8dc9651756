"""`cost_map_node`: the thin rclpy adapter over the ROS-free core (README, "ROS 2 node").

Parameters are `params.py`'s table; model, frame buffer, keyframes, bank `pipeline.py`; outputs
`render.py`; the latest-frame thread `worker.py`; counters `stats.py`; cost_cloud and cost_grid
`world_node.py`. This file only declares, subscribes, publishes and logs. The managed variant is
`lifecycle_node.py`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from contrast_semask_ros import codec, params
from contrast_semask_ros.backends import BackendError
from contrast_semask_ros.bank import BankError
from contrast_semask_ros.engine_spec import EngineSpecError
from contrast_semask_ros.exit_codes import EXIT_BAD_INPUT, EXIT_ENVIRONMENT
from contrast_semask_ros.pipeline import Pipeline
from contrast_semask_ros.render import OUTPUTS, OutputRenderer
from contrast_semask_ros.stats import BAD_INPUTS, RuntimeStats
from contrast_semask_ros.worker import LatestWorker
from contrast_semask_ros.world_node import WorldOutputs, check_values, declare_parameters
from contrast_semask_ros.world_node import qos as _qos

try:  # rclpy and the messages come from the ROS 2 install; main() says so if they are missing
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from nav_msgs.msg import Odometry
    from rcl_interfaces.msg import SetParametersResult
    from rclpy.executors import ExternalShutdownException

    try:
        from rclpy.event_handler import SubscriptionEventCallbacks
    except ImportError:  # Humble
        from rclpy.qos_event import SubscriptionEventCallbacks
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image
    from std_srvs.srv import Trigger

    _ROS_IMPORT_ERROR: ImportError | None = None
except ImportError as _err:  # pragma: no cover - exercised only without ROS
    _ROS_IMPORT_ERROR = _err
    Node = object  # type: ignore[assignment,misc]

THROTTLE_S = 5.0  # at most one log line per cause per this many seconds
STOP_TIMEOUT_S = 30.0  # how long shutdown waits for the frame in progress
# what a start with bad parameters or model files raises; each message says how to fix it
STARTUP_ERRORS = (params.ConfigError, BackendError, EngineSpecError, BankError, OSError)


class _CostMap:
    """The node's logic, mixed into an rclpy node (CostMapNode, CostMapLifecycleNode): `_declare`
    once, then `_start` (model, topics, worker) and `_stop` (the reverse)."""

    def _declare(self) -> None:
        self.values = declare_parameters(self, params.PARAMS)  # ConfigError: bad camera_pose
        self.add_on_set_parameters_callback(self._on_set_parameters)  # after the declarations
        self.pipeline: Pipeline | None = None
        self._handles: list[tuple[Any, Any]] = []  # (destroy function, entity) for _stop
        self._active = False

    def _start(self) -> None:
        v = self.values = check_values(params.resolve(self.values))  # STARTUP_ERRORS
        self.pipeline = Pipeline.open(v, reuse_outputs=True)  # preloads bank_load_path
        self.stats, self.renderer = RuntimeStats(), OutputRenderer(v['overlay_max_cost'])
        out_qos = _qos(v['output_qos_depth'], v['output_reliability'])
        # a QoS mismatch would otherwise be a silent "no output"; count samples DDS lost
        events = SubscriptionEventCallbacks(  # lost: DDS's own running total, not summed deltas
            incompatible_qos=self._on_incompatible_qos, message_lost=lambda status: self.stats
            .gauge_max('frames_lost_in_transport', status.total_count))
        image_type = Image if v['image_transport'] == 'raw' else CompressedImage
        image_qos, keep = _qos(v['image_qos_depth'], v['image_reliability']), self._keep
        keep(self.destroy_subscription, self.create_subscription(
            image_type, 'image', self._on_image, image_qos, event_callbacks=events))
        keep(self.destroy_subscription, self.create_subscription(
            Image, 'patch_cost', self._on_patch, _qos(v['patch_qos_depth'], 'reliable')))
        keep(self.destroy_subscription, self.create_subscription(  # the base position only;
            Odometry, 'odom', self._on_odom, _qos(10, 'best_effort')))  # matches any publisher
        self._pub_keyframes = keep(self.destroy_publisher, self.create_publisher(  # the stamp,
            CameraInfo, 'keyframes', _qos(10, 'reliable')))  # size of each kept frame (only)
        off = {name for name in ('embedding', 'confidence') if not v[f'publish_{name}']}
        self._pubs = {name: keep(self.destroy_publisher, self.create_publisher(
            Image, name, out_qos)) for name in OUTPUTS if name not in off}
        self._msgs = {name: Image() for name in self._pubs}  # reused: publish copies them
        self.pub_diag = keep(self.destroy_publisher, self.create_publisher(
            DiagnosticArray, '/diagnostics', 10))
        self.world = keep(WorldOutputs.close, WorldOutputs(self, v, out_qos, keep))
        for name, action in self.pipeline.bank_services(v['bank_save_path'],
                                                        v['bank_load_path']).items():
            keep(self.destroy_service, self.create_service(
                Trigger, name, lambda _request, _response, act=action: Trigger.Response(**act())))
        if v['diagnostics_period_s'] > 0:
            keep(self.destroy_timer, self.create_timer(v['diagnostics_period_s'],
                                                       self._publish_diagnostics))
        self._worker = LatestWorker(self._process, self._on_frame_error, 'cost_map_worker')
        self.get_logger().info(f"ready: {self.pipeline.describe()}; {v['image_transport']} "
                               f"images on {self.resolve_topic_name('image')}")

    def _keep(self, destroy: Any, entity: Any) -> Any:
        self._handles.append((destroy, entity))
        return entity

    def _stop(self) -> None:  # stop taking frames, finish the current one, destroy, free model
        if self.pipeline is None:
            return
        finished = self._worker.stop(STOP_TIMEOUT_S)
        for destroy, entity in reversed(self._handles):
            destroy(entity)
        self._handles.clear()
        if finished:
            self.pipeline.close()
        else:  # never free the model under a running inference; the process is ending anyway
            self.get_logger().error(f'a frame still ran after {STOP_TIMEOUT_S} s: model not freed')
        self.pipeline = None

    def _on_image(self, msg: Any) -> None:
        if self._active:  # a configured but inactive lifecycle node ignores frames
            self.stats.count('frames_in')
            if self._worker.submit(msg):
                self.stats.count('frames_dropped')  # the worker was still busy with one

    def _on_incompatible_qos(self, status: Any) -> None:
        self.stats.count('image_qos_incompatible', status.total_count_change)
        self.get_logger().warn(
            f"a publisher on {self.resolve_topic_name('image')} offers an incompatible QoS "
            f'(policy id {status.last_policy_kind}): set image_reliability: best_effort (any '
            'camera matches it)', throttle_duration_sec=THROTTLE_S)

    def _on_frame_error(self, msg: Any, err: Exception) -> None:
        if not self.context.ok():  # shutting down (SIGINT): publishers are already invalid
            return
        self.stats.count('frame_errors')
        self.get_logger().error(f'frame {codec.header_stamp_ns(msg.header)} failed: {err}',
                                throttle_duration_sec=THROTTLE_S)

    def _process(self, msg: Any, received: float) -> None:
        v, start = self.values, time.perf_counter()
        try:  # a frame over max_image_pixels is refused before it is decoded
            rgb = codec.decode_rgb(msg, v['image_transport'], v['max_image_pixels'])
        except codec.CodecError as err:
            self.stats.count('frames_too_large' if isinstance(err, codec.ImageTooLarge)
                             else 'frames_rejected')
            self.get_logger().warn(f'image rejected: {err}', throttle_duration_sec=THROTTLE_S)
            return
        decoded = time.perf_counter()
        stamp, (height, width) = codec.header_stamp_ns(msg.header), rgb.shape[:2]
        wanted = {name for name, pub in self._pubs.items()
                  if name == 'cost' or pub.get_subscription_count() > 0}
        world = self.world.wanted()  # (cloud, grid) or None: they need the confidence too
        result = self.pipeline.process(rgb, stamp, want_confidence='confidence' in wanted
                                       or world is not None)
        processed = time.perf_counter()
        for notice in filter(None, (result.size_change, result.stamp_jump)):  # counted below
            self.get_logger().warn(notice, throttle_duration_sec=THROTTLE_S)
        for name, out in self.renderer.render(result, rgb, wanted).items():
            self._pubs[name].publish(codec.set_image_fields(self._msgs[name], *out, msg.header))
        if result.keyframe:  # announced: the supervision node labels only the frames kept
            self._pub_keyframes.publish(CameraInfo(header=msg.header, height=height, width=width))
        published = time.perf_counter()
        self.stats.record_frame(result, (decoded - start) * 1e3, (published - processed) * 1e3,
                                (time.monotonic() - received) * 1e3, (self.get_clock().now()
                                .nanoseconds - stamp) / 1e9, len(self.pipeline.bank))
        if world is not None:  # after the image outputs, in this (the worker) thread
            self.world.process(msg.header, result, world)

    def _on_patch(self, msg: Any) -> None:
        result = self.pipeline.add_patch_message(msg)
        self.stats.record_patch(result, len(self.pipeline.bank))
        if result.problem():
            self.get_logger().warn(result.problem(), throttle_duration_sec=THROTTLE_S)

    def _on_odom(self, msg: Any) -> None:  # the position: keyframes by distance; the pose:
        self.stats.record_odometry(update := self.pipeline.add_odometry_message(msg))
        self.world.add_odometry(msg)  # cost_grid (and a cost_cloud in odom), once wanted
        if update.notice:
            self.get_logger().warn(update.notice, throttle_duration_sec=THROTTLE_S)

    def _on_set_parameters(self, changes: list[Any]) -> SetParametersResult:
        try:
            checked = {p.name: params.check(p.name, p.value) for p in changes}
        except params.ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        self.values.update(checked)
        if self.pipeline is not None:  # else used when a lifecycle node is configured
            self.pipeline.set_propagation(*map(self.values.get, ('temperature', 'min_confidence')))
            self.renderer.overlay_max_cost = self.values['overlay_max_cost']
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        self.stats.gauge('bank_size', len(self.pipeline.bank))
        warn, message, values = self.stats.summary(BAD_INPUTS)
        status = DiagnosticStatus(
            name=f'{self.get_fully_qualified_name()}: cost map', message=message,
            level=DiagnosticStatus.WARN if warn else DiagnosticStatus.OK,
            hardware_id=self.pipeline.backend.name,
            values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(array)

    def close(self) -> None:
        self._active = False
        self._stop()


class CostMapNode(_CostMap, Node):
    """`cost_map_node`: starts working as soon as it is constructed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('cost_map', **kwargs)
        self._declare()
        self._start()
        self._active = True


def main(argv: list[str] | None = None) -> int:
    """Console script `cost_map_node`. Exit codes (exit_codes.py): 0 stopped (SIGINT too), 2 could
    not start with these parameters or model files (the log says why), 3 no rclpy."""
    return run(CostMapNode, argv)


def run(make_node: Any, argv: list[str] | None) -> int:
    if _ROS_IMPORT_ERROR is not None:
        sys.stderr.write(f'cost_map_node needs ROS 2 (rclpy, the messages of package.xml): '
                         f'source your ROS 2 setup.bash first ({_ROS_IMPORT_ERROR})\n')
        return EXIT_ENVIRONMENT
    logging.basicConfig(level=logging.INFO, format='[%(levelname)s] [%(name)s]: %(message)s')
    rclpy.init(args=argv if argv is not None else sys.argv)
    node, code = None, 0
    try:
        node = make_node()
        rclpy.spin(node)  # callbacks here; inference in the node's worker thread
    except STARTUP_ERRORS as err:
        rclpy.logging.get_logger('cost_map').fatal(f'not starting: {err}')
        code = EXIT_BAD_INPUT
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

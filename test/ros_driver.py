"""The real-rclpy side of the node tests; run inside a private network namespace (ros_harness).

    python test/ros_driver.py SCENARIO --model m.onnx --out result.json [--node-arg ARG ...]

Starts `cost_map_node` as a subprocess (the installed console script, real rclpy and Fast DDS),
drives it from a real rclpy probe node (publishing camera frames and patch costs, subscribing
to every output, calling its parameter services), stops it with SIGINT and writes what it saw
to a JSON file that test_node.py asserts on. Scenarios: main, params, bad_start, and bag (plays
a drive bag into the node for comparison with contrast-semask-replay), rate (for
bench/bench_node_rate.py).

Self-supervision (test_patch_cost_node.py; no --model): `supervision` starts `patch_cost_node`
and plays a simulated straight drive (odometry, IMU, camera_info as arrays, `straight_drive`)
into it in real time (`DrivePlayer`), collecting patch_cost masks, footprints and /diagnostics
(`SupervisionProbe`); `supervision_bad_start` starts it with bad parameters. The pieces are
reusable for a drive through both nodes: `start_patch_cost_node`, `straight_drive`,
`DrivePlayer.play`, `SupervisionProbe`.

Both nodes (test_supervised_pair.py; --model): `supervised_pair` starts cost_map_node with the
launch file's supervised settings and patch_cost_node on the same topics, plays a drive_sim
drive (odometry, IMU, camera_info and rendered images) into them in real time, stamped with the
wall clock (`SimDrivePlayer`), and measures misses, the adaptation latency (`pair_latency`) and
the cost images against the simulator's ground truth (`pair_accuracy`).

World outputs (test_world_node.py; --model): `world` starts cost_map_node with camera_pose and
plays a drive_sim drive (odometry, camera_info, images, a few oracle patch masks) into it in
real time (`WorldProbe`, `_play_world`), subscribing to cost_cloud and cost_grid only after a
second; each cloud and grid is summarised against the simulator (`_cloud_summary`,
`_grid_summary`). Then a node without extrinsics, and one with use_depth fed aligned depth
images (`_world_depth`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import outside_namespace_reason, without_wheel_bootstrap
from scenes import two_texture_scene
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from contrast_semask_ros import codec, params
from contrast_semask_ros.bank import BANK_FORMAT

H, W = 120, 200  # camera size; the test model's engine is 96x128
FRAME_ID = 'camera_optical'
OUTPUTS = ('cost', 'confidence', 'embedding', 'cost_overlay', 'embedding_viz')
NODE = Path(sys.executable).parent / 'cost_map_node'
PATCH_COST_NODE = Path(sys.executable).parent / 'patch_cost_node'


def header(sec: int, nanosec: int = 0) -> Header:
    msg = Header(frame_id=FRAME_ID)
    msg.stamp.sec, msg.stamp.nanosec = sec, nanosec
    return msg


def patch_mask(left: float, right: float) -> np.ndarray:
    mask = np.full((H, W), np.nan, np.float32)
    mask[60:110, 10:60] = left  # inside the grass half
    mask[60:110, 130:190] = right  # inside the brick half
    return mask


class Probe(Node):
    def __init__(self, ns: str = '', compressed: bool = False) -> None:
        super().__init__('probe')
        self.ns = ns
        self.received: dict[str, list[Any]] = defaultdict(list)
        self.diagnostics: list[Any] = []
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for topic in OUTPUTS:
            self.create_subscription(Image, f'{ns}/{topic}',
                                     lambda m, t=topic: self.received[t].append(m), qos)
        self.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 10)
        self.pub_image = self.create_publisher(CompressedImage if compressed else Image,
                                               f'{ns}/image', qos)
        self.pub_patch = self.create_publisher(Image, f'{ns}/patch_cost', qos)
        self.rgb, self.labels = two_texture_scene(H, W)
        self.compressed = compressed

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.02)

    def send_frame(self, sec: int, rgb: np.ndarray | None = None, encoding: str = 'rgb8') -> None:
        rgb = self.rgb if rgb is None else rgb
        if self.compressed:
            msg = codec.fill_compressed(CompressedImage(), rgb, 'png', header=header(sec))
        else:
            msg = codec.fill_image(Image(), rgb, encoding, header(sec))
        self.pub_image.publish(msg)

    def send_patch(self, sec: int, mask: np.ndarray, encoding: str = '32FC1') -> None:
        self.pub_patch.publish(codec.fill_image(Image(), mask, encoding, header(sec)))

    def frames_until(self, topic: str, start_sec: int, count: int, timeout: float,
                     condition=lambda msgs: True) -> int:
        """Publish a frame every 0.1 s (stamps start_sec, +1, ...) until `count` messages on
        `topic` and `condition(messages)`; publishing until replies arrive covers DDS matching.
        Returns the next unused stamp."""
        sec = start_sec
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.send_frame(sec)
            sec += 1
            self.spin_for(0.1)
            if len(self.received[topic]) >= count and condition(self.received[topic]):
                return sec
        raise TimeoutError(f'{topic}: {len(self.received[topic])} messages after {timeout} s')

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 10.0) -> Any:
        client = self.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f'service {name} not available')
        future = client.call_async(request)
        end = time.monotonic() + timeout
        while not future.done() and time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.05)
        if not future.done():
            raise TimeoutError(f'service {name} did not answer')
        return future.result()

    def set_param(self, name: str, value: Any) -> dict[str, Any]:
        request = SetParameters.Request(parameters=[Parameter(name, value=value)
                                                    .to_parameter_msg()])
        result = self.call(SetParameters, f'{self.ns}/cost_map/set_parameters', request)
        return {'successful': result.results[0].successful, 'reason': result.results[0].reason}

    def get_params(self, names: list[str]) -> dict[str, Any]:
        result = self.call(GetParameters, f'{self.ns}/cost_map/get_parameters',
                           GetParameters.Request(names=names))
        return {n: parameter_value_to_python(v) for n, v in zip(names, result.values,
                                                                strict=True)}

    def counters(self) -> dict[str, float]:
        """The newest /diagnostics key-values of the cost map node."""
        for array in reversed(self.diagnostics):
            for status in array.status:
                if 'cost map' in status.name:
                    return {kv.key: float(kv.value) for kv in status.values}
        return {}


def describe(msg: Image) -> dict[str, Any]:
    return {'sec': msg.header.stamp.sec, 'nanosec': msg.header.stamp.nanosec,
            'frame_id': msg.header.frame_id, 'encoding': msg.encoding,
            'height': msg.height, 'width': msg.width, 'step': msg.step}


def halves(msg: Image) -> tuple[float, float, float]:
    """Mean cost left (grass) and right (brick) away from the boundary, unknown fraction."""
    cost = codec.image_to_array(msg)
    with warnings.catch_warnings():  # the mean of an all-NaN (unknown) half is NaN
        warnings.simplefilter('ignore', RuntimeWarning)
        return (float(np.nanmean(cost[:, :80])), float(np.nanmean(cost[:, 120:])),
                float(np.isnan(cost).mean()))


def start_node(args: argparse.Namespace, extra: list[str]) -> subprocess.Popen[str]:
    # rcl applies --params-file and -p in order, the later winning: the test's own arguments
    # (a params file) go first, the scenario's -p overrides after them
    exe = args.node_exe or str(NODE.with_name('cost_map_lifecycle_node') if args.scenario ==
                                'lifecycle' else NODE)
    argv = [exe, '--ros-args', '-p', f'model_path:={args.model}',
            *args.node_arg, *extra]
    env = without_wheel_bootstrap(dict(os.environ)) if args.node_exe else None
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def stop_node(proc: subprocess.Popen[str], result: dict[str, Any]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        output, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        result['sigint_timeout'] = True
    result['exit_code'] = proc.returncode
    result['node_log'] = output[-6000:]


def scenario_main(args: argparse.Namespace, probe: Probe) -> dict[str, Any]:
    result: dict[str, Any] = {}
    proc = start_node(args, ['-p', 'bank_size:=32', '-p', 'buffer_frames:=10',
                             '-p', 'diagnostics_period_s:=0.5'])
    try:
        sec = probe.frames_until('cost', 100, 1, timeout=60)
        sec = probe.frames_until('embedding', sec, 1, timeout=10)
        result['first'] = {t: describe(probe.received[t][0]) for t in OUTPUTS
                           if probe.received[t]}
        result['sent_stamps'] = list(range(100, sec))
        result['before_patch'] = halves(probe.received['cost'][-1])
        # a patch on a frame the node has processed; the cost converges to the measured values
        processed = probe.received['cost'][-1].header.stamp.sec
        probe.send_patch(processed, patch_mask(0.2, 0.9))
        sec = probe.frames_until(
            'cost', sec, 1, timeout=20,
            condition=lambda msgs: halves(msgs[-1])[2] < 0.5 and abs(
                halves(msgs[-1])[0] - 0.2) < 0.05)
        probe.spin_for(0.3)
        result['after_patch'] = halves(probe.received['cost'][-1])
        # run-time parameters: validated by the node's on-set callback / read-only descriptors
        result['set_temperature'] = probe.set_param('temperature', 0.05)
        result['set_bad_temperature'] = probe.set_param('temperature', -1.0)
        result['set_bank_size'] = probe.set_param('bank_size', 8)
        result['params_now'] = probe.get_params(['temperature', 'bank_size'])
        # malformed and hostile inputs, one at a time (a burst of frames would be collapsed by
        # the image subscription's keep-last depth 1): each is survived and counted
        good = len(probe.received['cost'])
        bad = codec.fill_image(Image(), probe.rgb, 'rgb8', header(sec))
        bad.data = bytes(bad.data)[:100]  # data shorter than step * height
        hostile = [
            lambda: probe.pub_image.publish(bad),
            lambda: probe.send_frame(sec + 1, np.zeros((H, W), np.float32), '32FC1'),
            lambda: probe.send_frame(sec + 2, np.zeros((H, W), np.uint8), 'mono8'),
            lambda: probe.send_frame(sec + 3, np.ascontiguousarray(probe.rgb[:60, :100])),
            lambda: probe.send_patch(processed, np.full((H, W), np.nan, np.float32)),
            lambda: probe.send_patch(processed, np.where(np.isnan(patch_mask(1, 1)), np.nan,
                                                         np.inf).astype(np.float32)),
            lambda: probe.send_patch(1, patch_mask(0.5, 0.5)),  # long evicted frame
            lambda: probe.send_patch(10_000, patch_mask(0.5, 0.5)),  # a future frame
            lambda: probe.send_patch(processed, np.zeros((H, W, 3), np.uint8), 'rgb8'),
        ]
        for send in hostile:
            send()
            probe.spin_for(0.25)
        for i in range(50):  # a burst: the reliable depth-10 subscription may drop some
            probe.send_patch(processed, patch_mask(0.2 + i * 1e-3, 0.9))
        probe.spin_for(0.5)
        sec = probe.frames_until('cost', sec + 10, good + 3, timeout=20)
        result['after_bad_inputs'] = halves(probe.received['cost'][-1])
        result['last_cost'] = describe(probe.received['cost'][-1])
        result['services'] = {name: probe.call(Trigger, f'/cost_map/{name}',
                                               Trigger.Request()).success
                              for name in ('save_bank', 'reset_bank')}
        probe.spin_for(1.2)
        result['diagnostics'] = probe.counters()
    finally:
        stop_node(proc, result)
    return result


def _bad_bank_files(root: Path) -> dict[str, Path]:
    """Readable bank files that are not banks: wrong field types, a plain .npy."""
    good = {'format': np.array(BANK_FORMAT), 'embedding_dim': np.array(32),
            'prototypes': np.eye(2, 32, dtype=np.float32), 'costs': np.array([0.1, 0.9]),
            'counts': np.array([1, 1]), 'stamps_ns': np.array([1, 2])}
    files = {'valid': root / 'valid.npz'}
    np.savez(files['valid'], **good)  # preloaded at start (bank_load_path must exist then)
    for name, change in (('dim_array', {'embedding_dim': np.array([32, 32])}),
                         ('dim_string', {'embedding_dim': np.array('32')}),
                         ('costs_string', {'costs': np.array(['a', 'b'])}),
                         ('costs_huge', {'costs': np.array([0.1, 1e300])})):
        files[name] = root / f'{name}.npz'
        np.savez(files[name], **{**good, **change})
    files['plain_npy'] = root / 'plain_npy.npz'
    with open(files['plain_npy'], 'wb') as f:
        np.save(f, np.zeros((2, 32), np.float32))
    return files


def scenario_hostile(args: argparse.Namespace, probe: Probe) -> dict[str, Any]:
    """Inputs that did harm before (issue 13): malformed bank files through ~/load_bank, clock
    jumps, costs out of range or beyond float32, bad run-time parameters, wrong mask sizes;
    then the node must still learn. Also ~/load_bank of a good file. (frames_dropped, the
    worker's newest-frame rule, is tested deterministically in test_worker.py.)"""
    result: dict[str, Any] = {}
    root = Path.cwd()
    files = _bad_bank_files(root)
    bank_link = root / 'load_me.npz'
    bank_link.unlink(missing_ok=True)
    bank_link.symlink_to(files.pop('valid'))
    proc = start_node(args, ['-p', 'bank_size:=32', '-p', 'buffer_frames:=10',
                             '-p', 'buffer_age_s:=5.0', '-p', 'diagnostics_period_s:=0.5',
                             '-p', f'bank_load_path:={bank_link}',
                             '-p', f'bank_save_path:={root / "saved.npz"}'])
    try:
        sec = probe.frames_until('cost', 100, 1, timeout=60)
        loads = {}
        for name, path in files.items():  # the service reads bank_load_path: point it there
            bank_link.unlink(missing_ok=True)
            bank_link.symlink_to(path)
            answer = probe.call(Trigger, '/cost_map/load_bank', Trigger.Request())
            loads[name] = {'success': answer.success, 'message': answer.message}
        result['bad_loads'] = loads
        # clock jumps: one far-future stamp, then the camera's clock goes on; then back in time
        probe.send_frame(10**9)
        probe.spin_for(0.3)
        sec = probe.frames_until('cost', sec, len(probe.received['cost']) + 3, timeout=20)
        processed = probe.received['cost'][-1].header.stamp.sec
        probe.send_patch(processed, patch_mask(0.2, 0.9))
        probe.spin_for(0.3)
        sec = probe.frames_until('cost', 20, len(probe.received['cost']) + 3, timeout=20)
        after_jump_back = probe.received['cost'][-1].header.stamp.sec
        # out-of-range and float32-overflowing costs, a mask of the wrong size
        for mask in (patch_mask(5.0, -3.0), patch_mask(1e300, 0.5).astype(np.float64)):
            probe.send_patch(after_jump_back, mask, '64FC1' if mask.dtype == np.float64
                             else '32FC1')
            probe.spin_for(0.25)
        probe.send_patch(after_jump_back, np.full((H, W + 1), 0.5, np.float32))
        probe.spin_for(0.25)
        # a frame claiming 16000 x 16000 (over max_image_pixels), and one of no pixels
        huge = Image(header=header(sec), height=16000, width=16000, encoding='rgb8',
                     step=48000, data=bytes(300))
        empty = Image(header=header(sec + 1), height=0, width=W, encoding='rgb8', step=3 * W)
        for msg in (huge, empty):
            probe.pub_image.publish(msg)
            probe.spin_for(0.3)
        sec += 2
        result['bad_params'] = {
            'temperature_tiny': probe.set_param('temperature', 1e-300),
            'overlay_inf': probe.set_param('overlay_max_cost', float('inf')),
            'cost_range_bad': probe.set_param('min_confidence', float('nan'))}
        # still learning at the new time: a patch on a frame after the jump back converges
        probe.send_patch(after_jump_back, patch_mask(0.3, 0.8))
        sec = probe.frames_until(
            'cost', sec, 1, timeout=20,
            condition=lambda msgs: abs(halves(msgs[-1])[1] - 0.8) < 0.1)
        result['after'] = halves(probe.received['cost'][-1])
        # a good bank file loads through the service
        saved = probe.call(Trigger, '/cost_map/save_bank', Trigger.Request())
        bank_link.unlink(missing_ok=True)
        bank_link.symlink_to(root / 'saved.npz')
        good = probe.call(Trigger, '/cost_map/load_bank', Trigger.Request())
        result['good_load'] = {'saved': saved.success, 'success': good.success,
                               'message': good.message}
        probe.spin_for(1.2)  # a /diagnostics period after the last input
        result['diagnostics'] = probe.counters()
    finally:
        stop_node(proc, result)
    return result


def scenario_params(args: argparse.Namespace, probe: Probe) -> dict[str, Any]:
    result: dict[str, Any] = {}
    proc = start_node(args, ['-r', '__ns:=/robot1', '-p', 'temperature:=0.2'])
    try:
        sec = probe.frames_until('cost', 100, 3, timeout=60)
        result['params'] = probe.get_params(
            ['temperature', 'min_confidence', 'publish_embedding', 'image_transport',
             'bank_size'])
        probe.spin_for(0.5)
        result['embedding_messages'] = len(probe.received['embedding'])
        result['cost'] = describe(probe.received['cost'][-1])
        result['last_sent'] = sec - 1
    finally:
        stop_node(proc, result)
    return result


def run_to_exit(proc: subprocess.Popen) -> dict[str, Any]:
    """A node that should refuse to start: its exit code and the end of its log (killed after
    60 s if it did start)."""
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    return {'exit_code': proc.returncode, 'log': output[-3000:]}


def scenario_bad_start(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, extra in (('missing_model', ['-p', 'model_path:=/nonexistent/model.onnx']),
                        ('size_mismatch', ['-p', 'input_height:=100']),
                        ('bank_too_large', ['-p', 'bank_size:=4096'])):
        result[name] = run_to_exit(start_node(args, extra))
    return result


def scenario_lifecycle(args: argparse.Namespace, probe: Probe) -> dict[str, Any]:
    """cost_map_lifecycle_node through its transitions: outputs only while active; cleanup
    frees the model and a second configure/activate works again."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    def state() -> str:
        return probe.call(GetState, '/cost_map/get_state', GetState.Request()).current_state.label

    def change(transition: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition))
        return probe.call(ChangeState, '/cost_map/change_state', request).success

    def outputs_during(seconds: float, first_sec: int) -> int:
        before = len(probe.received['cost'])
        for i in range(int(seconds / 0.2)):
            probe.send_frame(first_sec + i)
            probe.spin_for(0.2)
        return len(probe.received['cost']) - before

    result: dict[str, Any] = {}
    proc = start_node(args, ['-p', 'bank_size:=32'])
    try:
        result['initial'] = state()
        result['costs_unconfigured'] = outputs_during(1.0, 10)
        result['configure'] = change(Transition.TRANSITION_CONFIGURE)
        result['after_configure'] = state()
        result['costs_inactive'] = outputs_during(1.0, 20)
        result['activate'] = change(Transition.TRANSITION_ACTIVATE)
        result['after_activate'] = state()
        probe.frames_until('cost', 30, 3, timeout=30)
        result['deactivate'] = change(Transition.TRANSITION_DEACTIVATE)
        probe.spin_for(0.5)
        result['costs_deactivated'] = outputs_during(1.0, 60)
        result['cleanup'] = change(Transition.TRANSITION_CLEANUP)
        result['after_cleanup'] = state()
        result['configure_again'] = change(Transition.TRANSITION_CONFIGURE)
        result['activate_again'] = change(Transition.TRANSITION_ACTIVATE)
        before = len(probe.received['cost'])
        probe.frames_until('cost', 100, before + 2, timeout=30)
        result['costs_again'] = len(probe.received['cost']) - before
    finally:
        stop_node(proc, result)
    return result


def scenario_qos(args: argparse.Namespace, probe: Probe) -> dict[str, Any]:
    """A best-effort camera publisher and a node asking for reliable images: no frame can
    arrive, and the node must say why instead of staying silent."""
    result: dict[str, Any] = {}
    proc = start_node(args, ['-p', 'image_reliability:=reliable', '-p', 'bank_size:=32',
                             '-p', 'diagnostics_period_s:=0.25'])
    best_effort = probe.create_publisher(
        Image, '/image', QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
    try:
        end = time.monotonic() + 8
        while time.monotonic() < end and not probe.counters().get('image_qos_incompatible'):
            best_effort.publish(codec.fill_image(Image(), probe.rgb, 'rgb8', header(1)))
            probe.spin_for(0.2)
        result['diagnostics'] = probe.counters()
        result['costs'] = len(probe.received['cost'])
    finally:
        stop_node(proc, result)
    return result


def scenario_bag(args: argparse.Namespace, probe: Probe) -> dict[str, Any]:
    """Play a drive bag into the node in recording order, one frame at a time (each frame waits
    for its cost, so none is dropped), and save every cost image by stamp for comparison with
    `contrast-semask-replay` on the same bag."""
    from rosbags.highlevel import AnyReader

    result: dict[str, Any] = {}
    proc = start_node(args, ['-p', f'bank_size:={args.bank_size}', '-p', 'buffer_frames:=30'])
    costs: dict[str, np.ndarray] = {}
    try:
        probe.frames_until('cost', 1, 1, timeout=60)  # warm-up frames (stamps 1, 2, ...)
        probe.call(Trigger, '/cost_map/reset_bank', Trigger.Request())
        with AnyReader([Path(args.bag)]) as reader:
            conns = [c for c in reader.connections
                     if c.topic in ('/camera/image_raw', '/traversal/patch_cost')]
            for conn, _, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
                image = Image(header=header(*stamp), height=msg.height, width=msg.width,
                              encoding=msg.encoding, is_bigendian=msg.is_bigendian,
                              step=msg.step, data=bytes(msg.data))
                if conn.topic == '/traversal/patch_cost':
                    probe.pub_patch.publish(image)
                    probe.spin_for(0.3)  # let the node take it before the next frame
                    continue
                before = len(probe.received['cost'])
                probe.pub_image.publish(image)
                end = time.monotonic() + 20
                while len(probe.received['cost']) == before and time.monotonic() < end:
                    rclpy.spin_once(probe, timeout_sec=0.02)
                out = probe.received['cost'][-1]
                if (out.header.stamp.sec, out.header.stamp.nanosec) != stamp:
                    raise RuntimeError(f'no cost for frame {stamp}')
                costs[f'{stamp[0]}_{stamp[1]}'] = codec.image_to_array(out).copy()
        np.savez(args.out.with_suffix('.npz'), **costs)
        result['frames'] = len(costs)
    finally:
        stop_node(proc, result)
    return result


def scenario_rate(args: argparse.Namespace, probe: Probe) -> dict[str, Any]:
    """Publish camera frames at fixed rates and count the cost images that come back: the
    highest rate with one output per input is what the node sustains without drops."""
    import cv2

    height, width = (int(v) for v in args.size.split('x'))
    rgb = cv2.resize(probe.rgb, (width, height))
    result: dict[str, Any] = {'size': [height, width], 'rates': {}}
    proc = start_node(args, ['-p', f'bank_size:={args.bank_size}',
                             '-p', 'diagnostics_period_s:=0.25'])
    try:
        probe.frames_until('cost', 1, 1, timeout=60)
        probe.send_patch(probe.received['cost'][-1].header.stamp.sec, cv2.resize(
            patch_mask(0.2, 0.9), (width, height), interpolation=cv2.INTER_NEAREST))
        sec = 1000
        for rate in (float(r) for r in args.rates.split(',')):
            probe.spin_for(1.0)  # drain
            probe.received['cost'].clear()
            start_counts = probe.counters()
            first, sent = sec, 0
            start = time.monotonic()
            while time.monotonic() - start < args.seconds:
                probe.send_frame(sec, rgb)
                sec, sent = sec + 1, sent + 1
                next_time = start + sent / rate
                while time.monotonic() < next_time:
                    rclpy.spin_once(probe, timeout_sec=max(0.0, next_time - time.monotonic()))
            probe.spin_for(1.0)
            after = probe.counters()
            got = {m.header.stamp.sec for m in probe.received['cost']}
            result['rates'][str(rate)] = {
                'sent': sent, 'received': len(got & set(range(first, sec))),
                **{k: after.get(k, 0) - start_counts.get(k, 0)
                   for k in ('frames_in', 'frames_out', 'frames_dropped')}}
        result['diagnostics'] = probe.counters()
    finally:
        stop_node(proc, result)
    return result


# --- self-supervision: patch_cost_node ----------------------------------------------------------

SUPERVISION_CAMERA_POSE = '[0.3,0.0,1.0,0.0,0.35,0.0]'  # 1 m up, looking 20 degrees down
_NS = 1_000_000_000


def start_patch_cost_node(ros_args: list[str], exe: str | None = None) -> subprocess.Popen[str]:
    """patch_cost_node (this environment's, or `exe`) with `--ros-args` ros_args; stdout and
    stderr together in proc.stdout (stop_node collects them)."""
    argv = [exe or str(PATCH_COST_NODE), '--ros-args', *ros_args]
    env = without_wheel_bootstrap(dict(os.environ)) if exe else None
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def camera_info_msg(width: int = 160, height: int = 120, fx: float = 100.0, fy: float = 100.0,
                    frame_id: str = FRAME_ID) -> CameraInfo:
    """A pinhole CameraInfo (no distortion, principal point at the image centre)."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    msg = CameraInfo(width=width, height=height, distortion_model='plumb_bob')
    msg.header.frame_id = frame_id
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


@dataclass
class Drive:
    """A drive as arrays; times in seconds from its start (stamps: start + time)."""

    odom_t: np.ndarray  # N
    odom_xyz: np.ndarray  # N, 3 base position in odom
    odom_quat: np.ndarray  # N, 4 base orientation x, y, z, w
    odom_speed: np.ndarray  # N, m/s (twist.linear.x)
    imu_t: np.ndarray  # M
    imu_acc: np.ndarray  # M, 3 linear_acceleration (m/s^2, gravity included)
    camera_t: np.ndarray  # K, camera_info (frame) times
    cmd_t: np.ndarray = field(default_factory=lambda: np.zeros(0))  # cmd_vel times
    cmd_speed: np.ndarray = field(default_factory=lambda: np.zeros(0))  # m/s

    @property
    def duration(self) -> float:
        return float(max(self.odom_t[-1], self.imu_t[-1], self.camera_t[-1]))


def straight_drive(seconds: float = 8.0, speed: float = 1.0, rough_from_x: float = 4.0,
                   smooth_std: float = 0.1, rough_std: float = 2.0, imu_hz: float = 200.0,
                   odom_hz: float = 50.0, camera_hz: float = 10.0, seed: int = 0) -> Drive:
    """Straight along odom x at `speed`; vertical vibration of std smooth_std (m/s^2) before
    x = rough_from_x and rough_std after; cmd_vel = speed at odom_hz."""
    rng = np.random.default_rng(seed)
    odom_t = np.arange(0.0, seconds, 1.0 / odom_hz)
    imu_t = np.arange(0.0, seconds, 1.0 / imu_hz)
    odom_xyz = np.zeros((len(odom_t), 3))
    odom_xyz[:, 0] = speed * odom_t
    quat = np.tile([0.0, 0.0, 0.0, 1.0], (len(odom_t), 1))
    std = np.where(speed * imu_t < rough_from_x, smooth_std, rough_std)
    acc = np.zeros((len(imu_t), 3))
    acc[:, 2] = 9.80665 + rng.normal(0.0, 1.0, len(imu_t)) * std
    return Drive(odom_t, odom_xyz, quat, np.full(len(odom_t), speed), imu_t, acc,
                 np.arange(0.0, seconds, 1.0 / camera_hz), odom_t.copy(),
                 np.full(len(odom_t), speed))


class DrivePlayer:
    """Publishes a Drive from `node` in real time (stamps = start + drive time) on relative or
    absolute topics: odom (Odometry), imu (Imu, identity orientation), camera_info, cmd_vel
    (Twist, when cmd_vel is given)."""

    def __init__(self, node: Node, odom: str = '/odom', imu: str = '/imu',
                 camera_info: str = '/camera_info', cmd_vel: str | None = None,
                 camera: CameraInfo | None = None) -> None:
        from geometry_msgs.msg import Twist

        self.node = node
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {'odom': node.create_publisher(Odometry, odom, qos),
                     'imu': node.create_publisher(Imu, imu, qos),
                     'camera_info': node.create_publisher(CameraInfo, camera_info, qos)}
        if cmd_vel:
            self.pubs['cmd_vel'] = node.create_publisher(Twist, cmd_vel, qos)
        self.twist_type = Twist
        self.camera = camera or camera_info_msg()
        self.start_ns = 0
        self.start_wall = 0.0
        self.sent: dict[str, list[int]] = defaultdict(list)  # topic -> stamps (ns)

    def wait_for_subscribers(self, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(pub.get_subscription_count() > 0 for pub in self.pubs.values()):
                return
            rclpy.spin_once(self.node, timeout_sec=0.05)
        missing = [n for n, p in self.pubs.items() if p.get_subscription_count() == 0]
        raise TimeoutError(f'no subscriber on {missing} after {timeout} s')

    def now(self) -> float:
        """Drive time (s) of the wall clock."""
        return time.monotonic() - self.start_wall

    def stamp(self, t: float) -> Any:
        ns = self.start_ns + int(round(t * _NS))
        return ns, (ns // _NS, ns % _NS)

    def odometry(self, t: float, xyz: Any, quat: Any, speed: float) -> Odometry:
        msg = Odometry(child_frame_id='base_link')
        _, (msg.header.stamp.sec, msg.header.stamp.nanosec) = self.stamp(t)
        msg.header.frame_id = 'odom'
        position, q = msg.pose.pose.position, msg.pose.pose.orientation
        position.x, position.y, position.z = (float(v) for v in xyz)
        q.x, q.y, q.z, q.w = (float(v) for v in quat)
        msg.twist.twist.linear.x = float(speed)
        return msg

    def imu(self, t: float, acc: Any) -> Imu:
        msg = Imu()
        _, (msg.header.stamp.sec, msg.header.stamp.nanosec) = self.stamp(t)
        msg.header.frame_id = 'imu_link'
        msg.orientation.w = 1.0
        a = msg.linear_acceleration
        a.x, a.y, a.z = (float(v) for v in acc)
        return msg

    def camera_info(self, t: float, k: list[float] | None = None) -> CameraInfo:
        msg = CameraInfo(width=self.camera.width, height=self.camera.height,
                         distortion_model=self.camera.distortion_model, d=self.camera.d,
                         k=self.camera.k if k is None else k, r=self.camera.r,
                         p=self.camera.p)
        msg.header.frame_id = self.camera.header.frame_id
        _, (msg.header.stamp.sec, msg.header.stamp.nanosec) = self.stamp(t)
        return msg

    def play(self, drive: Drive, extra: list[tuple[float, str, Any]] = (),
             on_spin: Callable[[], None] | None = None) -> dict[str, list[int]]:
        """Publish every message of `drive` at its time, plus `extra` (time, topic, message
        or a callable making it); spins the node in between. Returns the stamps sent per topic
        (self.sent; extras are not in it)."""
        events: list[tuple[float, int, str, Any]] = []
        for i, t in enumerate(drive.odom_t):
            events.append((t, 0, 'odom', lambda t=t, i=i: self.odometry(
                t, drive.odom_xyz[i], drive.odom_quat[i], drive.odom_speed[i])))
        for i, t in enumerate(drive.imu_t):
            events.append((t, 1, 'imu', lambda t=t, i=i: self.imu(t, drive.imu_acc[i])))
        for t in drive.camera_t:
            events.append((t, 2, 'camera_info', lambda t=t: self.camera_info(t)))
        if 'cmd_vel' in self.pubs:
            for t, speed in zip(drive.cmd_t, drive.cmd_speed, strict=True):
                events.append((t, 3, 'cmd_vel', lambda s=speed: self._twist(s)))
        events += [(t, 4, topic, make) for t, topic, make in extra]
        events.sort(key=lambda e: (e[0], e[1]))
        self.start_ns, self.start_wall = time.time_ns(), time.monotonic()
        for t, order, topic, make in events:
            while (wait := t - self.now()) > 0:
                rclpy.spin_once(self.node, timeout_sec=min(wait, 0.01))
                if on_spin:
                    on_spin()
            msg = make() if callable(make) else make
            self.pubs[topic].publish(msg)
            if order < 4:
                stamp = getattr(getattr(msg, 'header', None), 'stamp', None)
                if stamp is not None:
                    self.sent[topic].append(stamp.sec * _NS + stamp.nanosec)
        return self.sent

    def _twist(self, speed: float) -> Any:
        msg = self.twist_type()
        msg.linear.x = float(speed)
        return msg


class SupervisionProbe(Node):
    """Collects patch_cost_node's outputs: a summary of each patch_cost mask (not the mask:
    hundreds arrive), the footprint markers and its /diagnostics."""

    def __init__(self, patch_cost: str = '/patch_cost', footprints: str = '/footprints') -> None:
        super().__init__('supervision_probe')
        self.masks: list[dict[str, Any]] = []
        self.markers: list[dict[str, Any]] = []
        self.diagnostics: list[dict[str, Any]] = []
        self.clock: Callable[[], float] = time.monotonic  # set to the player's drive time
        qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(Image, patch_cost, self._on_mask, qos)
        self.create_subscription(MarkerArray, footprints, self._on_markers, qos)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)

    def _on_mask(self, msg: Image) -> None:
        mask = codec.image_to_array(msg)
        finite = mask[np.isfinite(mask)]
        self.masks.append({
            **describe(msg), 'stamp_ns': msg.header.stamp.sec * _NS + msg.header.stamp.nanosec,
            'received': self.clock(), 'pixels': int(finite.size),
            'min': float(finite.min()) if finite.size else None,
            'max': float(finite.max()) if finite.size else None,
            'nonfinite_not_nan': int(np.isinf(mask).sum())})

    def _on_markers(self, msg: MarkerArray) -> None:
        for m in msg.markers:
            self.markers.append({
                'stamp_ns': m.header.stamp.sec * _NS + m.header.stamp.nanosec,
                'frame_id': m.header.frame_id, 'type': m.type, 'id': m.id,
                'color': [m.color.r, m.color.g, m.color.b, m.color.a],
                'points': [[p.x, p.y, p.z] for p in m.points]})

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if 'patch cost' in status.name:
                self.diagnostics.append({
                    'received': self.clock(), 'name': status.name, 'level': int.from_bytes(
                        status.level, 'little') if isinstance(status.level, bytes)
                    else int(status.level), 'message': status.message,
                    'values': {kv.key: kv.value for kv in status.values}})

    def wait_for_publishers(self, topics: list[str], timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(self.count_publishers(topic) > 0 for topic in topics):
                return
            rclpy.spin_once(self, timeout_sec=0.05)
        raise TimeoutError(f'no publisher on one of {topics} after {timeout} s')

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.02)


def scenario_supervision(args: argparse.Namespace) -> dict[str, Any]:
    """patch_cost_node with camera_pose and its own keyframes on a straight 1 m/s drive, smooth
    then rough from x = 4 m, with bad messages among the good ones (a NaN IMU sample, a
    camera_info with K = 0, an out-of-order and a zero-quaternion odometry)."""
    result: dict[str, Any] = {}
    probe = SupervisionProbe()
    player = DrivePlayer(probe)
    probe.clock = player.now
    proc = start_patch_cost_node(['-p', f'camera_pose:={SUPERVISION_CAMERA_POSE}',
                                  '-p', 'use_keyframes:=false',
                                  '-p', 'diagnostics_period_s:=0.5', *args.node_arg])
    try:
        start = time.monotonic()
        player.wait_for_subscribers()
        probe.wait_for_publishers(['/patch_cost', '/footprints', '/diagnostics'])
        probe.spin_for(1.0)  # the node's side of the matching (footprints: subscriber count)
        result['startup_s'] = time.monotonic() - start
        drive = straight_drive(seconds=args.seconds)
        bad = [  # (when, topic, message): stamps of their own, between the good ones
            (2.0025, 'imu', lambda: player.imu(2.0025, (0.0, 0.0, float('nan')))),
            (2.55, 'camera_info', lambda: player.camera_info(2.55, [0.0] * 9)),
            (3.0, 'odom', lambda: player.odometry(2.0, (2.0, 0.0, 0.0), (0, 0, 0, 1), 1.0)),
            (3.51, 'odom', lambda: player.odometry(3.51, (3.51, 0, 0), (0, 0, 0, 0), 1.0))]
        sent = player.play(drive, bad)
        result['bad_messages'] = {'imu_nan': 1, 'camera_info_k_zero': 1, 'odom_out_of_order': 1,
                                  'odom_zero_quaternion': 1}
        result['drive_wall_s'] = player.now()
        probe.spin_for(1.5)  # the last labels and two /diagnostics periods
        result['start_ns'] = player.start_ns
        result['sent'] = {topic: len(stamps) for topic, stamps in sent.items()}
        result['camera_info_stamps'] = sent['camera_info']
        result['masks'] = probe.masks
        result['markers'] = probe.markers
        result['diagnostics'] = probe.diagnostics
    finally:
        stop_node(proc, result)
    return result


# A stand-in for tf2_ros (scenario supervision_tf): the documented Buffer / TransformListener /
# lookup_transform API, answering base_link -> camera_optical with a fixed transform once
# @DELAY@ s have passed since the Buffer was made (a TransformException before).
FAKE_TF2_ROS = '''import time
from types import SimpleNamespace as _Msg


class TransformException(Exception):
    pass


class Buffer:
    def __init__(self, *args, **kwargs):
        self.created = time.monotonic()
        self.lookups = 0

    def lookup_transform(self, target_frame, source_frame, time_, *args, **kwargs):
        self.lookups += 1  # the first @MISSES@ lookups miss, however late the node starts
        if (self.lookups <= @MISSES@ or time.monotonic() - self.created < @DELAY@
                or (target_frame, source_frame) != ('base_link', 'camera_optical')):
            raise TransformException(f'"{source_frame}" passed to lookupTransform argument '
                                     'source_frame does not exist')
        x, y, z, w = @QUAT@
        return _Msg(header=_Msg(frame_id=target_frame), child_frame_id=source_frame,
                    transform=_Msg(translation=_Msg(x=0.3, y=0.0, z=1.0),
                                   rotation=_Msg(x=x, y=y, z=z, w=w)))


class TransformListener:
    def __init__(self, buffer, node, *args, **kwargs):
        self.buffer, self.node = buffer, node
'''


def scenario_supervision_tf(args: argparse.Namespace) -> dict[str, Any]:
    """patch_cost_node without camera_pose, its extrinsics from TF: a stand-in tf2_ros module
    (FAKE_TF2_ROS; the real one is not installable from PyPI) that knows base_link ->
    camera_optical only after 1.5 s and two lookups (so the node has tried and failed
    whatever the machine's load). /diagnostics must say ERROR until then, and the node
    must take the camera frame from camera_info and start labelling afterwards. Signal both,
    on smooth ground (IMU cost 0) with cmd_vel (Twist) commanding twice the speed driven:
    the velocity-tracking cost 0.5 wins (combine_rule max)."""
    from scipy.spatial.transform import Rotation

    from contrast_semask_ros.supervision.geometry import camera_pose_to_optical

    fake = Path.cwd() / 'fake_tf2_ros'
    fake.mkdir(exist_ok=True)
    T = camera_pose_to_optical(0.3, 0.0, 1.0, 0.0, 0.35, 0.0)
    quat = tuple(float(v) for v in Rotation.from_matrix(T[:3, :3]).as_quat())  # x, y, z, w
    (fake / 'tf2_ros.py').write_text(FAKE_TF2_ROS.replace('@DELAY@', '1.5')
                                     .replace('@MISSES@', '2')
                                     .replace('@QUAT@', repr(quat)))
    os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, [str(fake),
                                                             os.environ.get('PYTHONPATH')]))
    result: dict[str, Any] = {}
    probe = SupervisionProbe()
    player = DrivePlayer(probe, cmd_vel='/cmd_vel')
    probe.clock = player.now
    proc = start_patch_cost_node(['-p', 'use_keyframes:=false', '-p', 'signal:=both',
                                  '-p', 'diagnostics_period_s:=0.25'])
    try:
        player.wait_for_subscribers()
        probe.wait_for_publishers(['/patch_cost', '/diagnostics'])
        drive = straight_drive(seconds=args.seconds, rough_from_x=100.0)
        drive.cmd_speed = 2.0 * drive.odom_speed  # measured / commanded = 0.5
        player.play(drive)
        probe.spin_for(0.6)
        result['masks'] = probe.masks
        result['diagnostics'] = probe.diagnostics
    finally:
        stop_node(proc, result)
    return result


def scenario_supervision_bad_start(args: argparse.Namespace) -> dict[str, Any]:
    """patch_cost_node must refuse bad parameters with one clear line and exit code 2."""
    pose = ['-p', f'camera_pose:={SUPERVISION_CAMERA_POSE}']
    cases = {'bad_signal': [*pose, '-p', 'signal:=lidar'],
             'no_extrinsics': [],  # no camera_pose, and tf2_ros is not installed here
             'pose_too_short': ['-p', 'camera_pose:=[0.3,0.0,1.0]'],
             'pose_integers': ['-p', 'camera_pose:=[0,0,1,0,0,0]'],  # an integer array
             'band_reversed': [*pose, '-p', 'imu_f_low:=40.0']}
    result: dict[str, Any] = {'tf2_ros_installed': bool(importlib.util.find_spec('tf2_ros'))}
    if result['tf2_ros_installed']:  # then the node waits for TF instead of refusing
        del cases['no_extrinsics']
    for name, extra in cases.items():
        result[name] = run_to_exit(start_patch_cost_node(extra))
    return result


# --- both nodes: cost_map_node learning from patch_cost_node's labels on a simulated drive -----

PAIR_CAMERA = (120, 160)  # height, width: the 96x128 engine's aspect, divisible by mask_scale 4
PAIR_RING_M = 6.0  # RingTerrain: smooth trail within 6 m of the start, low vegetation beyond
NEAR_FIELD_M = 3.0  # ground this close to the camera: where the test model tells them apart
LAST_S = 4.0  # the end of the drive the MAE is judged on


def ring_drive(seconds: float, camera: tuple[int, int], horizon_s: float
               ) -> tuple[Any, list[Any]]:
    """A drive_sim drive over RingTerrain at 10 Hz for `seconds`, camera (height, width), and
    its frames rendered beforehand (a player publishes them in real time)."""
    from contrast_semask_train.data import drive_sim

    height, width = camera
    count = int(round(seconds * 10))
    drive = drive_sim.SimDrive(drive_sim.SimDriveSpec(
        frames=count, height=height, width=width, fps=10.0, seed=0, horizon_s=horizon_s),
        RingTerrain())
    return drive, [drive.render(i) for i in range(count)]


class RingTerrain:
    """A drive_sim terrain (`classes_at`) of two ground classes in rings around the start:
    smooth trail (cost 0) for r < ring_m, low vegetation (cost 0.8) for ring_m <= r < 2 ring_m,
    and so on. The test texture model (grey grass and brick, conftest.py) embeds drive_sim's
    classes alike but for rough trail and low vegetation, and those only where their texture is
    resolved, within about 3 m of the camera (cosine of the class means, smooth trail vs low
    vegetation: 0.06-0.12 there, 0.9 farther); so these two, and rings, which every heading of
    the path crosses."""

    def __init__(self, ring_m: float = PAIR_RING_M) -> None:
        from contrast_semask_train.data.synth import LOW_VEGETATION, SMOOTH_TRAIL

        self.ring_m = ring_m
        self.ids = np.array([SMOOTH_TRAIL, LOW_VEGETATION], np.uint8)

    def classes_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = np.hypot(np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1))
        return self.ids[np.floor(r / self.ring_m).astype(np.int64) % 2]


def sim_imu_calibration() -> tuple[float, float]:
    """power_at_cost_0 and power_at_cost_1 for drive_sim's IMU: its vertical vibration (5 to
    25 Hz, inside the node's 1 to 30 Hz band) has the std VIBRATION_BASE * exp(VIBRATION_GAIN *
    cost), so the band power at cost 0 and cost 1 is that squared (what
    contrast-semask-calibrate-imu would find on a drive over cost 0 and cost 1 ground)."""
    from contrast_semask_train.data import drive_sim

    base = drive_sim.VIBRATION_BASE ** 2
    return base, base * float(np.exp(2 * drive_sim.VIBRATION_GAIN))


class SimDrivePlayer:
    """Plays a drive_sim.SimDrive from `node` in real time: odometry (50 Hz), IMU (200 Hz) and,
    per camera frame, camera_info and the frame rendered beforehand (rgb8). Each message is
    stamped with the wall-clock time it is due (time.time_ns() at the start + its drive time)
    and published then; `lateness` holds how late each publish was (s)."""

    def __init__(self, node: Node, drive: Any, frames: list[Any]) -> None:
        from contrast_semask_train.data import drive_sim

        self.node, self.drive, self.frames = node, drive, frames
        self.ds = drive_sim
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {'odom': node.create_publisher(Odometry, '/odom', qos),
                     'imu': node.create_publisher(Imu, '/imu', qos),
                     'camera_info': node.create_publisher(CameraInfo, '/camera_info', qos),
                     'image': node.create_publisher(Image, '/image', QoSProfile(
                         depth=5, reliability=ReliabilityPolicy.RELIABLE))}
        camera = drive.camera
        self.camera_info = CameraInfo(
            width=camera.width, height=camera.height, distortion_model='plumb_bob',
            d=[0.0] * 5, k=[float(v) for v in camera.k.reshape(-1)],
            r=[float(v) for v in np.eye(3).reshape(-1)],
            p=[float(v) for v in camera.p.reshape(-1)])
        self.camera_info.header.frame_id = drive_sim.OPTICAL_FRAME
        self.images = [codec.fill_image(Image(), f.rgb, 'rgb8', Header(
            frame_id=drive_sim.OPTICAL_FRAME)) for f in frames]
        self.start_ns = 0
        self.lateness: dict[str, list[float]] = defaultdict(list)
        self.sent: dict[str, int] = defaultdict(int)

    def wait_for_subscribers(self, counts: dict[str, int], timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(self.pubs[t].get_subscription_count() >= n for t, n in counts.items()):
                return
            rclpy.spin_once(self.node, timeout_sec=0.05)
        raise TimeoutError(f'subscribers after {timeout} s: ' + ', '.join(
            f'{t} {self.pubs[t].get_subscription_count()}/{n}' for t, n in counts.items()))

    def _stamped(self, msg: Any, offset_ns: int) -> Any:
        sec, nanosec = divmod(self.start_ns + offset_ns, _NS)
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(sec), int(nanosec)
        return msg

    def _odometry(self, k: int, offset_ns: int) -> Odometry:
        traj = self.drive.trajectory
        msg = Odometry(child_frame_id=self.ds.BASE_FRAME)
        msg.header.frame_id = self.ds.ODOM_FRAME
        position, q = msg.pose.pose.position, msg.pose.pose.orientation
        position.x, position.y = float(traj.x[k]), float(traj.y[k])
        q.x, q.y, q.z, q.w = self.ds.yaw_quaternion(float(traj.yaw[k]))
        msg.twist.twist.linear.x = float(traj.speed[k])
        msg.twist.twist.angular.z = float(traj.yaw_rate[k])
        return self._stamped(msg, offset_ns)

    def _imu(self, k: int, offset_ns: int) -> Imu:
        imu = self.drive.imu
        msg = Imu()
        msg.header.frame_id = self.ds.BASE_FRAME
        q, w, a = msg.orientation, msg.angular_velocity, msg.linear_acceleration
        q.x, q.y, q.z, q.w = (float(v) for v in imu.orientation[k])
        w.x, w.y, w.z = (float(v) for v in imu.angular_velocity[k])
        a.x, a.y, a.z = (float(v) for v in imu.linear_acceleration[k])
        return self._stamped(msg, offset_ns)

    def play(self, seconds: float) -> None:
        """Everything of the first `seconds` of the drive, at its time; spins in between."""
        drive, ds = self.drive, self.ds
        offsets = drive.trajectory.stamp_ns - drive.start_ns
        end_ns = int(seconds * _NS)
        events: list[tuple[int, int, str, int]] = []
        for k in np.flatnonzero(offsets < end_ns):
            events.append((int(offsets[k]), 1, 'imu', int(k)))
            if k % (ds.IMU_HZ // ds.ODOM_HZ) == 0:
                events.append((int(offsets[k]), 0, 'odom', int(k)))
        for i in range(len(self.frames)):
            offset = drive.frame_stamp_ns(i) - drive.start_ns
            events += [(offset, 2, 'camera_info', i), (offset, 3, 'image', i)]
        events.sort()
        make = {'odom': self._odometry, 'imu': self._imu,
                'camera_info': lambda i, offset: self._stamped(self.camera_info, offset),
                'image': lambda i, offset: self._stamped(self.images[i], offset)}
        self.start_ns, start = time.time_ns(), time.monotonic()
        for offset, _, topic, index in events:
            while (wait := start + offset / _NS - time.monotonic()) > 0:
                rclpy.spin_once(self.node, timeout_sec=min(wait, 0.01))
            msg = make[topic](index, offset)
            self.lateness[topic].append((time.time_ns() - self.start_ns - offset) / _NS)
            self.pubs[topic].publish(msg)
            self.sent[topic] += 1


class PairProbe(SupervisionProbe):
    """SupervisionProbe (patch_cost masks, footprints, patch_cost_node's /diagnostics), plus
    the cost node's `cost` images, `keyframes` announcements and /diagnostics; receive times
    are wall-clock ns, comparable with the stamps. Each mask is also judged as the cost node's
    bank will judge it: `addable` when one of its regions covers at least min_patch_pixels
    cells of the engine's stride-4 grid (bank.prototypes_from_patch)."""

    def __init__(self, grid: tuple[int, int], min_patch_pixels: int) -> None:
        super().__init__()
        self.clock = lambda: time.time_ns() / _NS
        self.grid, self.min_patch_pixels = grid, min_patch_pixels
        self.costs: list[tuple[int, int, np.ndarray]] = []  # stamp, received (ns), cost
        self.keyframes: list[tuple[int, int]] = []  # stamp, received (ns)
        self.cost_map_diagnostics: list[dict[str, Any]] = []
        reliable = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(Image, '/cost', self._on_cost, reliable)
        self.create_subscription(CameraInfo, '/keyframes', self._on_keyframe, reliable)

    def _on_cost(self, msg: Image) -> None:
        received = time.time_ns()
        self.costs.append((codec.header_stamp_ns(msg.header), received,
                           codec.image_to_array(msg).astype(np.float32, copy=True)))

    def _on_keyframe(self, msg: CameraInfo) -> None:
        self.keyframes.append((codec.header_stamp_ns(msg.header), time.time_ns()))

    def _on_mask(self, msg: Image) -> None:
        from contrast_semask_ros.bank import mask_to_grid

        received = time.time_ns()
        super()._on_mask(msg)
        grid = mask_to_grid(codec.image_to_array(msg), *self.grid)
        _, counts = np.unique(grid[np.isfinite(grid)], return_counts=True)
        self.masks[-1].update(received_ns=received, cells=int(counts.sum()),
                              addable=bool((counts >= self.min_patch_pixels).any()))

    def _on_markers(self, msg: MarkerArray) -> None:
        received, first = time.time_ns(), len(self.markers)
        super()._on_markers(msg)
        for marker in self.markers[first:]:
            marker['received_ns'] = received

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        super()._on_diagnostics(msg)
        for status in msg.status:
            if 'cost map' in status.name:
                self.cost_map_diagnostics.append({
                    'received_ns': time.time_ns(),
                    'values': {kv.key: float(kv.value) for kv in status.values}})


def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {'n': int(a.size), 'median': float(np.median(a)), 'p99': float(np.percentile(a, 99)),
            'max': float(a.max())}


def pair_accuracy(frames: list[Any], near: list[np.ndarray], start_ns: int,
                  costs: list[tuple[int, int, np.ndarray]], seconds: float) -> dict[str, Any]:
    """The received cost images against the simulator's ground-truth cost of the same frame
    (by stamp), per second of drive time and over the last LAST_S seconds: the fraction of
    ground pixels with a known cost, the MAE over them, and the MAE a constant prediction (the
    mean ground-truth cost of the drive's ground pixels) has on the same pixels; the same on
    the near field (ground within NEAR_FIELD_M of the camera)."""
    constant = float(np.mean(np.concatenate([f.cost[np.isfinite(f.cost)] for f in frames])))
    keys = ('frames', 'ground', 'known', 'error', 'constant_error', 'near', 'near_known',
            'near_error', 'near_constant_error')
    per_second: dict[int, dict[str, float]] = {}
    last = dict.fromkeys(keys, 0.0)
    period_ns = frames[1].stamp_ns - frames[0].stamp_ns
    unmatched = 0
    for stamp, _, cost in costs:
        index, rest = divmod(stamp - start_ns, period_ns)
        if rest or not 0 <= index < len(frames):
            unmatched += 1
            continue
        gt = frames[index].cost
        ground = np.isfinite(gt)
        known = ground & np.isfinite(cost)
        near_known = known & near[index]
        error, constant_error = np.abs(cost - gt), np.abs(constant - gt)
        row = (1, ground.sum(), known.sum(), error[known].sum(), constant_error[known].sum(),
               near[index].sum(), near_known.sum(), error[near_known].sum(),
               constant_error[near_known].sum())
        sec = int(index * period_ns // _NS)
        bins = [per_second.setdefault(sec, dict.fromkeys(keys, 0.0))]
        if (index * period_ns) / _NS >= seconds - LAST_S:
            bins.append(last)
        for target in bins:
            for key, value in zip(keys, row, strict=True):
                target[key] += float(value)

    def summary(s: dict[str, float]) -> dict[str, float | None]:
        def ratio(a: str, b: str) -> float | None:
            return s[a] / s[b] if s[b] else None

        return {'frames': int(s['frames']), 'known_fraction': ratio('known', 'ground'),
                'mae': ratio('error', 'known'), 'constant_mae': ratio('constant_error', 'known'),
                'near_known_fraction': ratio('near_known', 'near'),
                'near_mae': ratio('near_error', 'near_known'),
                'near_constant_mae': ratio('near_constant_error', 'near_known')}

    return {'constant': constant, 'unmatched_costs': unmatched, 'last_s': LAST_S,
            'per_second': [{'second': sec, **summary(s)} for sec, s in sorted(
                per_second.items())], 'last': summary(last)}


def pair_latency(probe: PairProbe, start_ns: int, label_period_s: float) -> dict[str, Any]:
    """Adaptation latency: from the end of the IMU window of the first label that reaches the
    bank (the first `addable` mask) to the receipt of the first cost image with a known pixel
    (before it the bank is empty: every cost is NaN).

    That label's update is found by its footprint marker, published right after its masks: the
    newest marker stamped at or before the mask's receipt. The marker stamp is
    LabelUpdate.pose_stamp_ns, the window end capped at the newest odometry, so at most one
    odometry period (20 ms) before the window end: `latency_upper_s` counts from it. Exactly:
    the node makes an update at its first IMU sample (drive time 0) and then at every sample
    label_period_s (0.1 s) or more after the previous update, so with every sample received
    (the test checks imu.samples) the window ends lie on the 0.1 s grid from the start, and the
    window end is the first grid point at or after the marker stamp: `latency_s`."""
    period_ns = int(round(label_period_s * _NS))
    first_known = next(((s, r) for s, r, c in probe.costs if np.isfinite(c).any()), None)
    out: dict[str, Any] = {'first_known_cost': None if first_known is None else {
        'stamp_ns': first_known[0], 'received_ns': first_known[1]}}
    for name, masks in (('first_label', probe.masks),
                        ('first_added_label', [m for m in probe.masks if m['addable']])):
        if not masks:
            out[name] = None
            continue
        mask = masks[0]
        stamps = [m['stamp_ns'] for m in probe.markers if m['stamp_ns'] <= mask['received_ns']]
        marker = max(stamps) if stamps else None
        window_end = None if marker is None else (
            start_ns + -(-(marker - start_ns) // period_ns) * period_ns)
        known = None if first_known is None else first_known[1]
        out[name] = {
            'keyframe_stamp_ns': mask['stamp_ns'], 'received_ns': mask['received_ns'],
            'marker_stamp_ns': marker, 'window_end_ns': window_end,
            'window_end_s': None if window_end is None else (window_end - start_ns) / _NS,
            'mask_after_window_end_s': None if window_end is None else (
                mask['received_ns'] - window_end) / _NS,
            'latency_s': None if window_end is None or known is None else (
                known - window_end) / _NS,
            'latency_upper_s': None if marker is None or known is None else (
                known - marker) / _NS}
    added = out['first_added_label']
    out['costs_before_first_added_label'] = None if added is None else sum(
        r < added['received_ns'] for _, r, _ in probe.costs)
    out['known_costs_before_first_added_label'] = None if added is None else sum(
        bool(np.isfinite(c).any()) for _, r, c in probe.costs if r < added['received_ns'])
    return out


def scenario_supervised_pair(args: argparse.Namespace) -> dict[str, Any]:
    """cost_map_node (the launch file's supervised settings: COST_MAP_OVERRIDES and
    patch_qos_depth 60) and patch_cost_node (camera_pose of the simulator, use_keyframes, the
    simulator's IMU calibration) as subprocesses, wired as the launch file wires them; a
    simulated drive (drive_sim.SimDrive over RingTerrain, PAIR_CAMERA at 10 Hz, rendered
    beforehand) played into both in real time, stamped with the wall clock. Measures what the
    bank got (the cost node's /diagnostics: misses, patches added), the adaptation latency
    (pair_latency) and the cost images against the ground truth (pair_accuracy)."""
    from contrast_semask_ros.engine_spec import read_spec
    from contrast_semask_ros.supervision.params import COST_MAP_OVERRIDES, TABLE
    from contrast_semask_train.data import drive_sim

    began = time.monotonic()
    result: dict[str, Any] = {'cost_node': {}, 'patch_cost_node': {}}
    cost_overrides = {**COST_MAP_OVERRIDES, 'patch_qos_depth': 60, 'diagnostics_period_s': 0.5}
    cost_proc = start_node(args, [a for k, v in cost_overrides.items()
                                  for a in ('-p', f'{k}:={v}')])
    pose = '[' + ','.join(repr(float(v)) for v in drive_sim.CAMERA_POSE) + ']'
    power_0, power_1 = sim_imu_calibration()
    patch_args = ['-p', f'camera_pose:={pose}', '-p', f'power_at_cost_0:={power_0!r}',
                  '-p', f'power_at_cost_1:={power_1!r}', '-p', 'diagnostics_period_s:=0.5']
    patch_proc = start_patch_cost_node(patch_args)
    result['parameters'] = {'cost_map': cost_overrides, 'patch_cost': patch_args}
    try:
        spec = read_spec(args.model, verify=False)
        result['engine'] = {'height': spec.height, 'width': spec.width,
                            'bank_size': spec.bank_size}
        probe = PairProbe((spec.height // 4, spec.width // 4),
                          min_patch_pixels=int(params.DEFAULTS['min_patch_pixels']))
        drive, frames = ring_drive(args.seconds, PAIR_CAMERA, horizon_s=1.0)
        near = [drive_sim.ground_hits(drive.camera, f.T_odom_optical).range <= NEAR_FIELD_M
                for f in frames]
        player = SimDrivePlayer(probe, drive, frames)
        result['render_s'] = time.monotonic() - began
        player.wait_for_subscribers({'odom': 2, 'imu': 1, 'camera_info': 1, 'image': 1})
        probe.wait_for_publishers(['/cost', '/keyframes', '/patch_cost', '/footprints',
                                   '/diagnostics'])
        end = time.monotonic() + 20
        while time.monotonic() < end and not (probe.count_subscribers('/keyframes') >= 2 and
                                              probe.count_subscribers('/patch_cost') >= 2):
            rclpy.spin_once(probe, timeout_sec=0.05)
        probe.spin_for(1.0)  # the other sides of the matching (footprints: subscriber count)
        result['startup_s'] = time.monotonic() - began
        player.play(args.seconds)
        probe.spin_for(1.5)  # the last labels and costs, two /diagnostics periods
        result['start_ns'] = player.start_ns
        result['sent'] = dict(player.sent)
        result['publish_lateness_s'] = {t: _percentiles(v) for t, v in player.lateness.items()}
        result['masks'] = probe.masks
        result['markers'] = probe.markers
        result['keyframes'] = [s for s, _ in probe.keyframes]
        result['cost_images'] = [{'stamp_ns': s, 'received_ns': r,
                                  'known_fraction': float(np.isfinite(c).mean())}
                                 for s, r, c in probe.costs]
        result['cost_map_diagnostics'] = probe.cost_map_diagnostics
        result['patch_cost_diagnostics'] = probe.diagnostics
        result['latency'] = pair_latency(probe, player.start_ns,
                                         float(TABLE.defaults['label_period_s']))
        result['accuracy'] = pair_accuracy(frames, near, player.start_ns, probe.costs,
                                           args.seconds)
        result['camera_period_s'] = 1.0 / drive.spec.fps
    finally:
        stop_node(patch_proc, result['patch_cost_node'])
        stop_node(cost_proc, result['cost_node'])
    result['wall_s'] = time.monotonic() - began
    result['summary'] = _pair_summary(result)
    return result


def _pair_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The measured numbers of scenario_supervised_pair in one place."""
    costs = result['cost_map_diagnostics'][-1]['values'] if result.get(
        'cost_map_diagnostics') else {}
    added = (result.get('latency') or {}).get('first_added_label') or {}
    return {
        'latency_s': added.get('latency_s'), 'latency_upper_s': added.get('latency_upper_s'),
        'camera_period_s': result.get('camera_period_s'),
        **{key: costs.get(key, 0.0) for key in (
            'patches_in', 'patches_added', 'patches_empty', 'patches_miss', 'patches_rejected',
            'keyframes_kept', 'frames_out', 'frames_dropped', 'bank_size')},
        'keyframes_announced': len(result.get('keyframes', [])),
        'masks_received': len(result.get('masks', [])),
        'masks_addable': sum(m['addable'] for m in result.get('masks', [])),
        'publish_lateness_max_s': max((v['max'] for v in result.get(
            'publish_lateness_s', {}).values()), default=None),
        'per_second': [{k: s[k] for k in ('second', 'known_fraction', 'mae', 'constant_mae',
                                          'near_mae', 'near_constant_mae')}
                       for s in (result.get('accuracy') or {}).get('per_second', [])],
        'last': (result.get('accuracy') or {}).get('last'),
        'wall_s': result['wall_s']}



# --- the cost node's world outputs: cost_cloud and cost_grid (test_world_node.py) -------------

WORLD_CAMERA = (96, 160)  # height, width of the simulated camera
WORLD_SUBSCRIBE_S = 1.0  # drive time at which the probe subscribes to cost_cloud and cost_grid
WORLD_PATCH_FRAMES = (1, 2, 3, 4, 20, 21, 22)  # frames whose oracle mask is sent 0.25 s later
WORLD_DEPTH_S = 2.0  # drive time of the node with use_depth
WORLD_DEPTH_M = 3.0  # the depth images show a wall this far (optical z)
WORLD_DEPTH_UNKNOWN_ROWS = 8  # ... with no depth in their top rows


def _stamp_ns(msg: Any) -> int:
    return msg.header.stamp.sec * _NS + msg.header.stamp.nanosec


class WorldProbe(Node):
    """Publishes a drive_sim drive into the cost node (odometry, camera_info, images and a few
    oracle patch masks, through SimDrivePlayer's messages, without IMU) and collects its cost
    images, /diagnostics and, from WORLD_SUBSCRIBE_S on, cost_cloud and cost_grid with the real
    sensor_msgs/PointCloud2 and nav_msgs/OccupancyGrid classes."""

    def __init__(self) -> None:
        super().__init__('world_probe')
        self.costs: dict[int, np.ndarray] = {}  # stamp -> cost image
        self.clouds: list[Any] = []
        self.grids: list[Any] = []
        self.late_grids: list[Any] = []
        self.diagnostics: list[tuple[float, dict[str, float]]] = []  # (monotonic, values)
        self.create_subscription(Image, '/cost', self._on_cost, QoSProfile(
            depth=50, reliability=ReliabilityPolicy.RELIABLE))
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        self.pub_patch = self.create_publisher(Image, '/patch_cost', QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE))
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_depth = self.create_publisher(Image, '/depth', reliable)
        self.pub_depth_info = self.create_publisher(CameraInfo, '/depth/camera_info', reliable)

    def _on_cost(self, msg: Image) -> None:
        self.costs[_stamp_ns(msg)] = codec.image_to_array(msg).astype(np.float32, copy=True)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if 'cost map' in status.name:
                self.diagnostics.append((time.monotonic(), {
                    kv.key: float(kv.value) for kv in status.values}))

    def subscribe_world(self) -> None:
        from nav_msgs.msg import OccupancyGrid
        from rclpy.qos import DurabilityPolicy
        from sensor_msgs.msg import PointCloud2

        self.create_subscription(PointCloud2, '/cost_cloud', self.clouds.append, QoSProfile(
            depth=50, reliability=ReliabilityPolicy.RELIABLE))
        self.create_subscription(OccupancyGrid, '/cost_grid', self.grids.append, QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))

    def subscribe_late_grid(self) -> None:
        """A subscriber joining after the grids were published (transient local: it gets the
        newest one at once)."""
        from nav_msgs.msg import OccupancyGrid
        from rclpy.qos import DurabilityPolicy

        self.create_subscription(OccupancyGrid, '/cost_grid', self.late_grids.append,
                                 QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                            durability=DurabilityPolicy.TRANSIENT_LOCAL))

    def counters(self) -> dict[str, float]:
        return self.diagnostics[-1][1] if self.diagnostics else {}

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.02)


def _depth_plane(index: int, height: int, width: int) -> tuple[np.ndarray, str]:
    """Frame `index`'s depth image of a wall WORLD_DEPTH_M in front of the camera (optical z
    constant), 32FC1 metres for even frames and 16UC1 millimetres for odd ones, its top rows
    unknown (NaN, 0)."""
    if index % 2:
        depth = np.full((height, width), round(WORLD_DEPTH_M * 1000), np.uint16)
        depth[:WORLD_DEPTH_UNKNOWN_ROWS] = 0
        return depth, '16UC1'
    depth = np.full((height, width), WORLD_DEPTH_M, np.float32)
    depth[:WORLD_DEPTH_UNKNOWN_ROWS] = np.nan
    return depth, '32FC1'


def _play_world(probe: WorldProbe, player: SimDrivePlayer, drive: Any, seconds: float,
                at: dict[float, Callable[[], None]], depth: bool = False) -> None:
    """Odometry (50 Hz), camera_info and image (10 Hz) of the first `seconds` of `drive` in
    real time from `player` (stamped wall-clock start + drive time), the oracle masks of
    WORLD_PATCH_FRAMES 0.25 s after their frame, and the calls `at` {drive time: call}. With
    `depth`, each image is preceded by depth/camera_info (the colour camera's: aligned) and a
    depth image of the same stamp (_depth_plane)."""
    from contrast_semask_train.data import drive_sim as ds

    offsets = drive.trajectory.stamp_ns - drive.start_ns
    end_ns = int(seconds * _NS)
    events: list[tuple[int, int, str, Any]] = [
        (int(offsets[k]), 0, 'odom', int(k)) for k in np.flatnonzero(offsets < end_ns)
        if k % (ds.IMU_HZ // ds.ODOM_HZ) == 0]
    for i in range(len(player.frames)):
        offset = drive.frame_stamp_ns(i) - drive.start_ns
        events += [(offset, 1, 'camera_info', i), (offset, 2, 'image', i)]
        if depth:
            events.append((offset, 1, 'depth', i))
        if i in WORLD_PATCH_FRAMES:
            events.append((offset + _NS // 4, 3, 'patch', i))
    events += [(int(t * _NS), 4, 'call', call) for t, call in at.items()]
    events.sort(key=lambda e: e[:2])
    player.start_ns, start = time.time_ns(), time.monotonic()
    for offset, _, topic, index in events:
        while (wait := start + offset / _NS - time.monotonic()) > 0:
            rclpy.spin_once(probe, timeout_sec=min(wait, 0.01))
        if topic == 'call':
            index()
        elif topic == 'patch':
            frame_offset = drive.frame_stamp_ns(index) - drive.start_ns
            msg = codec.fill_image(Image(), drive.oracle(index), '32FC1', Header(
                frame_id=ds.OPTICAL_FRAME))
            probe.pub_patch.publish(player._stamped(msg, frame_offset))
        elif topic == 'depth':
            image, encoding = _depth_plane(index, player.camera_info.height,
                                           player.camera_info.width)
            probe.pub_depth_info.publish(player._stamped(player.camera_info, offset))
            probe.pub_depth.publish(player._stamped(codec.fill_image(
                Image(), image, encoding, Header(frame_id=ds.OPTICAL_FRAME)), offset))
        else:
            make = {'odom': player._odometry,
                    'camera_info': lambda i, o: player._stamped(player.camera_info, o),
                    'image': lambda i, o: player._stamped(player.images[i], o)}[topic]
            player.pubs[topic].publish(make(index, offset))
            player.sent[topic] += 1


def _cloud_summary(msg: Any, frames: list[Any], camera: Any, costs: dict[int, np.ndarray],
                   start_ns: int) -> dict[str, Any]:
    """A cost_cloud message against the simulator: its layout, and its points (odom) mapped back
    into the frame of its stamp (the sim camera's exact pose there): height above the ground,
    depth in front of the camera, distance of the reprojection from the sampled pixel centres
    (stride 4: rows and columns 1, 5, 9, ...), the cost and confidence of each point against
    the cost image of that frame, and the sampled pixels the cloud should hold (ground within
    cloud_max_range_m 20 m, known cost) against those it holds."""
    from contrast_semask_ros.world.cloud import cloud_array
    from contrast_semask_train.data import drive_sim as ds

    stamp = _stamp_ns(msg)
    index, rest = divmod(stamp - start_ns, _NS // 10)
    out: dict[str, Any] = {
        'stamp_ns': stamp, 'frame_index': int(index) if not rest else None,
        'frame_id': msg.header.frame_id, 'height': msg.height, 'width': msg.width,
        'point_step': msg.point_step, 'row_step': msg.row_step, 'is_dense': msg.is_dense,
        'is_bigendian': msg.is_bigendian, 'data_bytes': len(msg.data),
        'fields': [[f.name, f.offset, f.datatype, f.count] for f in msg.fields]}
    points = cloud_array(msg).reshape(-1)
    xyz = np.stack([points['x'], points['y'], points['z']], 1).astype(np.float64)  # N, 3
    out['points'] = len(points)
    cost = costs.get(stamp)
    if rest or not 0 <= index < len(frames) or cost is None or not len(points):
        return out
    T = frames[index].T_odom_optical
    optical = (xyz - T[:3, 3]) @ T[:3, :3]  # N, 3: R^T (p - t)
    u = camera.fx * optical[:, 0] / optical[:, 2] + camera.cx
    v = camera.fy * optical[:, 1] / optical[:, 2] + camera.cy
    col, row = np.rint((u - 1) / 4) * 4 + 1, np.rint((v - 1) / 4) * 4 + 1
    inside = (row >= 0) & (row < camera.height) & (col >= 0) & (col < camera.width)
    r, c = row[inside].astype(int), col[inside].astype(int)
    hits = ds.ground_hits(camera, T)
    sampled = np.zeros(cost.shape, bool)
    sampled[1::4, 1::4] = True
    expected = sampled & hits.ground & (hits.range <= 20.0) & np.isfinite(cost)
    got = np.zeros(cost.shape, bool)
    got[r, c] = True
    out.update({
        'max_abs_z': float(np.abs(xyz[:, 2]).max()),
        'min_depth': float(optical[:, 2].min()),
        'max_range': float(np.linalg.norm(optical, axis=1).max()),
        'max_pixel_error': float(max(np.abs(u - col).max(), np.abs(v - row).max())),
        'outside_image': int((~inside).sum()),
        'cost_mismatch': int((points['cost'][inside] != cost[r, c]).sum()),
        'cost_min': float(points['cost'].min()), 'cost_max': float(points['cost'].max()),
        'confidence_min': float(points['confidence'].min()),
        'expected_pixels': int(expected.sum()), 'got_pixels': int(got.sum()),
        'missing_pixels': int((expected & ~got).sum()),
        'extra_pixels': int((got & ~expected).sum())})
    return out


def _grid_summary(msg: Any, drive: Any, clouds: dict[int, Any], start_ns: int
                  ) -> dict[str, Any]:
    """A cost_grid message: header, info, values, the robot's position at its stamp (the
    simulator's) against the window, and the cloud of the same stamp against its known cells
    (the lattice cell of each point, floor(x / resolution), as the grid computes it)."""
    from contrast_semask_ros.world.cloud import cloud_array

    stamp = _stamp_ns(msg)
    info = msg.info
    data = np.asarray(msg.data, np.int8).reshape(info.height, info.width)
    o = info.origin
    out: dict[str, Any] = {
        'stamp_ns': stamp, 'frame_id': msg.header.frame_id,
        'map_load_time_ns': info.map_load_time.sec * _NS + info.map_load_time.nanosec,
        'resolution': info.resolution, 'width': info.width, 'height': info.height,
        'origin': [o.position.x, o.position.y, o.position.z],
        'orientation': [o.orientation.x, o.orientation.y, o.orientation.z, o.orientation.w],
        'min': int(data.min()), 'max': int(data.max()),
        'known': int((data >= 0).sum()), 'values': sorted({int(v) for v in np.unique(data)})}
    x, y, _ = drive.state_at(drive.start_ns + stamp - start_ns)
    size_x, size_y = info.width * info.resolution, info.height * info.resolution
    out['robot'] = [x, y]
    out['robot_from_centre'] = [x - (o.position.x + size_x / 2), y - (o.position.y + size_y / 2)]
    cloud = clouds.get(stamp)
    if cloud is not None:
        points = cloud_array(cloud).reshape(-1)
        inv = 1.0 / info.resolution
        col = np.floor(points['x'].astype(np.float64) * inv) - round(o.position.x * inv)
        row = np.floor(points['y'].astype(np.float64) * inv) - round(o.position.y * inv)
        inside = (col >= 0) & (col < info.width) & (row >= 0) & (row < info.height)
        values = data[row[inside].astype(int), col[inside].astype(int)]
        out['cloud'] = {'points': len(points), 'in_window': int(inside.sum()),
                        'on_known_cells': int((values >= 0).sum())}
    return out


def scenario_world(args: argparse.Namespace) -> dict[str, Any]:
    """cost_map_node with camera_pose (drive_sim's), cloud_frame odom and the grid's defaults,
    fed a drive_sim drive (RingTerrain, WORLD_CAMERA at 10 Hz) in real time with camera_info,
    odometry and a few oracle patch masks (the bank fills, the cost is known). Nobody
    subscribes to cost_cloud or cost_grid until WORLD_SUBSCRIBE_S (the node must compute
    nothing: its /diagnostics just before), then the probe does; at the end a second grid
    subscriber joins late. Then a second node without camera_pose and without tf2_ros: the
    cost image goes on, the world outputs are skipped and counted. Then a third with use_depth
    and aligned depth images (_world_depth)."""
    from contrast_semask_train.data import drive_sim

    began = time.monotonic()
    result: dict[str, Any] = {'node': {}, 'no_extrinsics': {}}
    pose = '[' + ','.join(repr(float(v)) for v in drive_sim.CAMERA_POSE) + ']'
    proc = start_node(args, ['-p', f'camera_pose:={pose}', '-p', 'cloud_frame:=odom',
                             '-p', 'diagnostics_period_s:=0.2'])
    probe = WorldProbe()
    try:
        drive, frames = ring_drive(args.seconds, WORLD_CAMERA, horizon_s=3.0)
        count = len(frames)
        player = SimDrivePlayer(probe, drive, frames)
        del player.pubs['imu']
        player.wait_for_subscribers({'odom': 1, 'camera_info': 1, 'image': 1})
        end = time.monotonic() + 20
        while time.monotonic() < end and not (probe.count_subscribers('/patch_cost') and
                                              probe.count_publishers('/cost_grid')):
            rclpy.spin_once(probe, timeout_sec=0.05)
        result['startup_s'] = time.monotonic() - began
        marks: dict[str, Any] = {}

        def subscribe() -> None:
            marks['before_subscribing'] = probe.counters()
            probe.subscribe_world()

        _play_world(probe, player, drive, args.seconds, {WORLD_SUBSCRIBE_S: subscribe})
        probe.spin_for(0.5)
        probe.subscribe_late_grid()
        probe.spin_for(0.6)
        result['sent'] = dict(player.sent)
        result['image_stamps'] = [player.start_ns + drive.frame_stamp_ns(i) - drive.start_ns
                                  for i in range(count)]
        result['before_subscribing'] = marks.get('before_subscribing', {})
        result['diagnostics'] = probe.counters()
        result['cost_stamps'] = sorted(probe.costs)
        result['clouds'] = [_cloud_summary(m, frames, drive.camera, probe.costs,
                                           player.start_ns) for m in probe.clouds]
        by_stamp = {_stamp_ns(m): m for m in probe.clouds}
        result['grids'] = [_grid_summary(m, drive, by_stamp, player.start_ns)
                           for m in probe.grids]
        result['late_grids'] = [_stamp_ns(m) for m in probe.late_grids]
        result['grid_qos'] = [
            {'reliability': info.qos_profile.reliability.name,
             'durability': info.qos_profile.durability.name, 'depth': info.qos_profile.depth}
            for info in probe.get_publishers_info_by_topic('/cost_grid')]
    finally:
        stop_node(proc, result['node'])
    # a node without extrinsics: camera_pose unset, and no tf2_ros here (or no TF: the same)
    second = time.monotonic()
    result['tf2_ros_installed'] = bool(importlib.util.find_spec('tf2_ros'))
    probe.costs.clear()
    clouds_before = len(probe.clouds)
    proc = start_node(args, ['-p', 'diagnostics_period_s:=0.2'])
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end and not (
                player.pubs['image'].get_subscription_count() and
                probe.count_publishers('/cost_cloud')):
            rclpy.spin_once(probe, timeout_sec=0.05)
        probe.spin_for(0.5)  # the node's side of the matching (cost_cloud: subscriber count)
        for i in range(15):
            player.pubs['camera_info'].publish(player._stamped(player.camera_info, i * _NS // 10))
            player.pubs['image'].publish(player._stamped(player.images[i], i * _NS // 10))
            probe.spin_for(0.1)
        probe.spin_for(0.5)
        out = result['no_extrinsics']
        out['costs'] = len(probe.costs)
        out['clouds'] = len(probe.clouds) - clouds_before
        out['diagnostics'] = probe.counters()
        out['wall_s'] = time.monotonic() - second
    finally:
        stop_node(proc, result['no_extrinsics'])
    try:
        result['depth'] = _world_depth(args, probe, player, pose)
    finally:
        probe.destroy_node()
    result['wall_s'] = time.monotonic() - began
    return result


def _world_depth(args: argparse.Namespace, probe: WorldProbe, player: SimDrivePlayer,
                 pose: str) -> dict[str, Any]:
    """A node with use_depth (cloud in the optical frame, stride 8) fed the same drive by the
    same player for WORLD_DEPTH_S with aligned depth images of a wall (_depth_plane): its
    clouds must follow the depth, not the ground plane."""
    out: dict[str, Any] = {}
    began = time.monotonic()
    proc = start_node(args, ['-p', f'camera_pose:={pose}', '-p', 'use_depth:=true',
                             '-p', 'cloud_stride:=8', '-p', 'diagnostics_period_s:=0.2'])
    try:
        player.wait_for_subscribers({'odom': 1, 'camera_info': 1, 'image': 1})
        end = time.monotonic() + 20
        while time.monotonic() < end and not (
                probe.pub_depth.get_subscription_count() and
                probe.count_publishers('/cost_cloud') and probe.count_subscribers('/patch_cost')):
            rclpy.spin_once(probe, timeout_sec=0.05)
        probe.spin_for(0.5)  # the node's side of the matching (cost_cloud: subscriber count)
        probe.costs.clear()
        first = len(probe.clouds)
        _play_world(probe, player, player.drive, WORLD_DEPTH_S, {}, depth=True)
        probe.spin_for(0.5)
        camera = player.drive.camera
        out['clouds'] = [_depth_cloud_summary(m, camera, probe.costs, player.start_ns)
                         for m in probe.clouds[first:]]
        out['diagnostics'] = probe.counters()
        out['wall_s'] = time.monotonic() - began
    finally:
        stop_node(proc, out)
    return out


def _depth_cloud_summary(msg: Any, camera: Any, costs: dict[int, np.ndarray], start_ns: int
                         ) -> dict[str, Any]:
    """A cost_cloud message of the use_depth node against its frame's depth image
    (_depth_plane): frame, optical z of its points, their reprojection onto the sampled pixel
    centres (stride 8: rows and columns 3, 11, 19, ...) with those pixels' cost, and the
    sampled pixels it should hold (known depth and cost) against those it holds."""
    from contrast_semask_ros.world.cloud import cloud_array

    stamp = _stamp_ns(msg)
    index, rest = divmod(stamp - start_ns, _NS // 10)
    points = cloud_array(msg).reshape(-1)
    out: dict[str, Any] = {'frame_id': msg.header.frame_id, 'points': len(points),
                           'frame_index': None if rest else int(index),
                           'is_dense': msg.is_dense}
    cost = costs.get(stamp)
    if rest or cost is None or not len(points):
        return out
    x, y, z = (points[k].astype(np.float64) for k in 'xyz')
    u, v = camera.fx * x / z + camera.cx, camera.fy * y / z + camera.cy
    col, row = np.rint((u - 3) / 8) * 8 + 3, np.rint((v - 3) / 8) * 8 + 3
    r, c = row.astype(int), col.astype(int)
    sampled = np.zeros(cost.shape, bool)
    sampled[3::8, 3::8] = True
    expected = sampled & np.isfinite(cost)
    expected[:WORLD_DEPTH_UNKNOWN_ROWS] = False
    got = np.zeros(cost.shape, bool)
    got[r, c] = True
    out.update({
        'max_z_error': float(np.abs(z - WORLD_DEPTH_M).max()),
        'max_pixel_error': float(max(np.abs(u - col).max(), np.abs(v - row).max())),
        'cost_mismatch': int((points['cost'] != cost[r, c]).sum()),
        'expected_pixels': int(expected.sum()), 'got_pixels': int(got.sum()),
        'missing_pixels': int((expected & ~got).sum()),
        'extra_pixels': int((got & ~expected).sum())})
    return out


def main() -> int:
    refusal = outside_namespace_reason('ros_driver.py')  # DDS must never reach a real network
    if refusal:
        sys.stderr.write(refusal + '\n')
        return 3
    parser = argparse.ArgumentParser()
    parser.add_argument('scenario',
                        choices=['main', 'params', 'bad_start', 'bag', 'rate', 'qos',
                                 'lifecycle', 'hostile', 'supervision',
                                 'supervision_bad_start', 'supervision_tf',
                                 'supervised_pair', 'world'])
    parser.add_argument('--rates', default='5,10,20,40')
    parser.add_argument('--seconds', type=float, default=3.0)
    parser.add_argument('--size', default='544x1024')
    parser.add_argument('--bag', default=None)
    parser.add_argument('--node-exe', default=None,
                        help='cost_map_node of another environment (default: this one)')
    parser.add_argument('--bank-size', type=int, default=32)
    parser.add_argument('--model', default=None,
                        help='the cost map node\'s model (every scenario but supervision*)')
    parser.add_argument('--out', required=True, type=Path)
    parser.add_argument('--node-arg', action='append', default=[])
    parser.add_argument('--compressed', action='store_true')
    parser.add_argument('--ns', default='')
    args = parser.parse_args()
    if args.model is None and not args.scenario.startswith('supervision'):
        parser.error(f'--model is required for scenario {args.scenario}')
    if args.scenario == 'bad_start':
        result = scenario_bad_start(args)
    elif args.scenario == 'supervision_bad_start':
        result = scenario_supervision_bad_start(args)
    elif args.scenario in ('supervision', 'supervision_tf', 'supervised_pair', 'world'):
        rclpy.init()
        try:
            run = {'supervision': scenario_supervision, 'supervision_tf': scenario_supervision_tf,
                   'supervised_pair': scenario_supervised_pair,
                   'world': scenario_world}[args.scenario]
            result = run(args)
            result['probe_rclpy'] = metadata.version('ros-rclpy')
        finally:
            rclpy.try_shutdown()
    else:
        rclpy.init()
        probe = Probe(args.ns, args.compressed)
        try:
            run = {'main': scenario_main, 'params': scenario_params,
                   'bag': scenario_bag, 'rate': scenario_rate,
                   'qos': scenario_qos, 'lifecycle': scenario_lifecycle,
                   'hostile': scenario_hostile}[args.scenario]
            result = run(args, probe)
            result['received'] = {t: [describe(m) for m in probe.received[t]] for t in OUTPUTS}
            result['probe_rclpy'] = metadata.version('ros-rclpy')
        finally:
            probe.destroy_node()
            rclpy.try_shutdown()
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())

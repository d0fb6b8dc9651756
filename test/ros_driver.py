"""The real-rclpy side of the node tests; run inside a private network namespace (ros_harness).

    python test/ros_driver.py SCENARIO --model m.onnx --out result.json [--node-arg ARG ...]

Starts `cost_map_node` as a subprocess (the installed console script, real rclpy and Fast DDS),
drives it from a real rclpy probe node (publishing camera frames and patch costs, subscribing
to every output, calling its parameter services), stops it with SIGINT and writes what it saw
to a JSON file that test_node.py asserts on. Scenarios: main, params, bad_start, and bag (plays
a drive bag into the node for comparison with contrast-semask-replay), rate (for
bench/bench_node_rate.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import outside_namespace_reason, without_wheel_bootstrap
from scenes import two_texture_scene
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from contrast_semask_ros import codec
from contrast_semask_ros.bank import BANK_FORMAT

H, W = 120, 200  # camera size; the test model's engine is 96x128
FRAME_ID = 'camera_optical'
OUTPUTS = ('cost', 'confidence', 'embedding', 'cost_overlay', 'embedding_viz')
NODE = Path(sys.executable).parent / 'cost_map_node'


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


def scenario_bad_start(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, extra in (('missing_model', ['-p', 'model_path:=/nonexistent/model.onnx']),
                        ('size_mismatch', ['-p', 'input_height:=100']),
                        ('bank_too_large', ['-p', 'bank_size:=4096'])):
        proc = start_node(args, extra)
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        result[name] = {'exit_code': proc.returncode, 'log': output[-3000:]}
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


def main() -> int:
    refusal = outside_namespace_reason('ros_driver.py')  # DDS must never reach a real network
    if refusal:
        sys.stderr.write(refusal + '\n')
        return 3
    parser = argparse.ArgumentParser()
    parser.add_argument('scenario',
                        choices=['main', 'params', 'bad_start', 'bag', 'rate', 'qos',
                                 'lifecycle', 'hostile'])
    parser.add_argument('--rates', default='5,10,20,40')
    parser.add_argument('--seconds', type=float, default=3.0)
    parser.add_argument('--size', default='544x1024')
    parser.add_argument('--bag', default=None)
    parser.add_argument('--node-exe', default=None,
                        help='cost_map_node of another environment (default: this one)')
    parser.add_argument('--bank-size', type=int, default=32)
    parser.add_argument('--model', required=True)
    parser.add_argument('--out', required=True, type=Path)
    parser.add_argument('--node-arg', action='append', default=[])
    parser.add_argument('--compressed', action='store_true')
    parser.add_argument('--ns', default='')
    args = parser.parse_args()
    if args.scenario == 'bad_start':
        result = scenario_bad_start(args)
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

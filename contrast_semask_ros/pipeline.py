"""The runtime pipeline shared by the node and replay: frame -> backend -> outputs; patch -> bank.

    pipeline = Pipeline(open_backend('model.onnx'), PipelineConfig())
    out = pipeline.process(rgb, stamp_ns)          # FrameResult at camera size (+ timings)
    pipeline.add_patch(mask, stamp_of_its_frame)   # PatchResult: prototypes into the bank
    pipeline.add_odometry(stamp_ns, (x, y, z))     # base position: keyframes by distance

`process` resizes the camera image to the engine size, runs the deployable graph with the
current bank, keeps the stride-4 embedding in the frame buffer (for patches that arrive later)
when the frame is a keyframe (keyframes.py: by distance travelled, by time, or every frame;
`FrameResult.keyframe`), and returns cost and confidence resized back to the camera size, with
cost NaN ("unknown") where the confidence is under `min_confidence`. `add_patch` finds the
frame the mask was drawn on and turns the mask into prototypes; a patch on a frame that was not
a keyframe misses with that reason. The bank, the frame buffer and the keyframe selector are
thread-safe, so a node may call `add_patch` and `add_odometry` from other threads while
`process` runs; `process` itself must be called from one thread at a time (the backend reuses
its buffers, and the frame buffer's float16 scratch).
"""

from __future__ import annotations

import array
import functools
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from contrast_semask_ros import codec
from contrast_semask_ros.backends import Backend, open_backend
from contrast_semask_ros.bank import AddResult, BankError, PrototypeBank
from contrast_semask_ros.codec import MessageBuffer
from contrast_semask_ros.frames import MISS_EVICTED, FrameBuffer, Lookup
from contrast_semask_ros.keyframes import MISS_NOT_KEYFRAME, KeyframeSelector, OdometryUpdate
from contrast_semask_ros.params import ConfigError, PipelineConfig, check
from contrast_semask_ros.preprocess import resize_image

# A checkpoint (.pt) has no exported bank: with bank_size 0 the PyTorch backend gets this many.
DEFAULT_CHECKPOINT_BANK = 256


def check_propagation(temperature: float, min_confidence: float) -> None:
    """The run-time adjustable settings; raises ConfigError."""
    check('temperature', temperature)
    check('min_confidence', min_confidence)


class StageTimings(NamedTuple):
    resize_ms: float  # camera image -> engine size
    infer_ms: float  # the backend call (inputs staged, graph, outputs on the host)
    buffer_ms: float  # the embedding kept in the frame buffer (written there by the backend)
    output_ms: float  # cost/confidence back to camera size, unknown mask
    total_ms: float


class Payloads(NamedTuple):
    """The bytes behind a FrameResult's planes, in 32FC1 row order, ready to become an rclpy
    message's `data` without a copy (array.array('B')); None where there is none."""

    cost: array.array | None  # H*W*4, with reuse_outputs
    confidence: array.array | None  # H*W*4, with reuse_outputs and want_confidence


class FrameResult(NamedTuple):
    stamp_ns: int
    embedding: np.ndarray  # D, h, w float32 unit-norm at stride 4 of the engine input; read-only
    #                         (how long it stays valid: Pipeline)
    cost: np.ndarray  # H, W float32 at camera size; NaN = unknown
    confidence: np.ndarray | None  # H, W float32 in [-1, 1] (-1 with an empty bank); None if
    #                                not wanted
    bank_size: int  # prototypes used for this frame
    timings: StageTimings
    payloads: Payloads
    size_change: str | None  # 'camera size changed (h, w) -> (H, W)' on a new size, else None
    stamp_jump: str | None  # what happened on a clock jump (frames.FrameBuffer), else None
    keyframe: bool = False  # kept in the frame buffer (patch costs for it can be used)


# PatchResult.status
PATCH_ADDED = 'added'  # prototypes added or merged into the bank
PATCH_EMPTY = 'empty'  # the frame was found but no region became a prototype (too small, ...)
PATCH_MISS = 'miss'  # no buffered frame for the stamp (reason: frames.MISS_*)
PATCH_REJECTED = 'rejected'  # the mask itself is unusable (reason says why and what to send)


class PatchResult(NamedTuple):
    stamp_ns: int
    status: str  # PATCH_ADDED, PATCH_EMPTY, PATCH_MISS or PATCH_REJECTED
    reason: str | None  # why not added (miss or rejection), None otherwise
    matched_stamp_ns: int | None  # the frame the mask was applied to; None on a miss
    added: AddResult | None  # what the bank did; None on a miss or rejection
    elapsed_ms: float

    def problem(self) -> str | None:
        """A log line when the patch did not fully reach the bank; None when it did."""
        if self.reason is not None:
            hint = ('' if self.reason.startswith(MISS_NOT_KEYFRAME) else ' (see buffer_frames, '
                    'buffer_age_s, stamp_tolerance_s for misses)')
            return f'patch_cost {self.stamp_ns} {self.status}: {self.reason}{hint}'
        if self.status == PATCH_EMPTY or self.added.skipped_invalid:
            return (f'patch_cost {self.stamp_ns}: {self.added.skipped_small} region(s) too small,'
                    f' {self.added.skipped_invalid} invalid (infinite cost, over the region cap'
                    '); prototypes added or merged: ' f'{self.added.added + self.added.merged}')
        return None

    @property
    def miss_reason(self) -> str | None:
        """Why nothing reached the bank (a miss or a rejection); None when the frame was found."""
        return self.reason if self.added is None else None


class Pipeline:
    """Backend + frame buffer + prototype bank; see the module docstring.

    With `reuse_outputs` (the node), cost and confidence are written into buffers that are
    reused from frame to frame: a FrameResult's arrays are then valid until the next `process`
    call, and its `payloads` hold their bytes for a message. Without it (replay, tests), every
    frame gets fresh arrays. `embedding` (float32) is a view of the frame buffer's slot for a
    keyframe in float32 storage (valid while the frame is buffered); otherwise (float16 storage,
    or not kept) the backend's float32 output in the buffer's spare: a read-only view valid until
    the next `process` call with `reuse_outputs`, a private copy without. Copy it to keep it.
    """

    def __init__(self, backend: Backend, config: PipelineConfig,
                 reuse_outputs: bool = False) -> None:
        spec = backend.spec
        config = self.config = config.validate(spec.bank_size)  # bank_size 0 -> Kmax
        self.backend = backend
        self.engine_size = (spec.width, spec.height)
        self._embedding_shape = spec.output(spec.output_names[0]).shape[1:]  # D, h, w
        self.temperature = config.temperature
        self.min_confidence = config.min_confidence
        self.frames = FrameBuffer(config.buffer_frames, config.buffer_age_s, config.buffer_dtype)
        self.keyframes = KeyframeSelector(config.keyframe_distance_m, config.keyframe_period_s,
                                          remember_s=config.buffer_age_s)
        self.bank = PrototypeBank(
            spec.embedding_dim, config.bank_size, config.min_patch_pixels,
            config.merge_similarity or None, config.eviction, cost_range=config.cost_range)
        self.reuse_outputs = reuse_outputs
        self._planes: dict[str, MessageBuffer] = {}  # cost, confidence at camera size
        self._unknown: np.ndarray | None = None  # H, W bool scratch
        self._camera_size: tuple[int, int] | None = None
        self.model_path: Path | None = None  # set by open()
        self.max_image_pixels = 0  # the decoders' limit for callers (params: max_image_pixels)

    @classmethod
    def open(cls, values: Mapping[str, Any], reuse_outputs: bool = False) -> Pipeline:
        """Open the model named by a resolved parameter dict (params.resolve) and build the
        pipeline on it. The engine decides the input size and, with bank_size 0, the bank
        size; a parameter that contradicts the engine raises ConfigError naming both values
        and the parameter to change. Model files that cannot be opened raise BackendError or
        EngineSpecError with the path."""
        model = Path(str(values['model_path'])).expanduser()
        if not values['model_path'] or not model.is_file():
            raise ConfigError(f"model_path {values['model_path']!r} is not a file: pass the "
                              '.engine, .onnx or .pt to run (model_path:=/path/model.engine)')
        backend = open_backend(model, values['backend'], height=values['input_height'],
                               width=values['input_width'], bank_size=values['bank_size'] or
                               DEFAULT_CHECKPOINT_BANK, device=values['device'],
                               precision=values['precision'])
        try:
            spec = backend.spec
            for name, want in (('input_height', spec.height), ('input_width', spec.width)):
                if values[name] not in (0, want):
                    raise ConfigError(
                        f'{name}={values[name]} but {model.name} was built for '
                        f'{spec.width}x{spec.height} (width x height): set {name} to 0 (= the '
                        f'model size) or to {want}, or export the model for the size you want')
            pipeline = cls(backend, PipelineConfig.from_values(values), reuse_outputs)
            pipeline.model_path = model
            pipeline.max_image_pixels = int(values.get('max_image_pixels', 0))
            if values.get('bank_load_path'):
                pipeline.load_bank(values['bank_load_path'])
            return pipeline
        except BaseException:
            backend.close()
            raise

    def describe(self) -> str:
        """One line: model, backend, sizes and bank, for start-up logs and reports."""
        spec = self.backend.spec
        return (f'{self.model_path or "model"} on {self.backend.name} ({spec.width}x'
                f'{spec.height}, D={spec.embedding_dim}, bank {self.config.bank_size} of Kmax '
                f'{spec.bank_size}, {spec.precision}; frame buffer {self.config.buffer_frames} '
                f'{self.config.buffer_dtype} keyframes, {self.keyframes.describe()})')

    def save_bank(self, path: str | os.PathLike) -> str:
        """Write the bank (atomic npz); returns what was done, for a log or a service answer."""
        return f'saved {len(self.bank)} prototypes to {self.bank.save(path)}'

    def load_bank(self, path: str | os.PathLike) -> str:
        """Replace the bank with a saved one (nothing changes if the file is refused); raises
        BankError or OSError saying what is wrong with the file."""
        if not str(path):
            raise BankError('no bank file given: set bank_load_path to a .npz written by '
                            '~/save_bank')
        return f'loaded {self.bank.load(path)} prototypes from {path}'

    def bank_services(self, save_path: str, load_path: str
                      ) -> dict[str, Callable[[], dict[str, Any]]]:
        """The node's std_srvs/Trigger services: name -> action returning the response fields
        ({'success': ..., 'message': ...}); a refused action answers success False and why."""
        actions = {'~/reset_bank': self.reset, '~/save_bank': lambda: self.save_bank(save_path),
                   '~/load_bank': lambda: self.load_bank(load_path)}
        return {name: functools.partial(_answer, action) for name, action in actions.items()}

    def close(self) -> None:
        """Release the backend (GPU memory); the pipeline is unusable afterwards."""
        self.backend.close()

    def set_propagation(self, temperature: float, min_confidence: float) -> None:
        """Change the run-time adjustable settings (validated; applies to the next frame)."""
        check_propagation(temperature, min_confidence)
        self.temperature, self.min_confidence = temperature, min_confidence

    def process(self, rgb: np.ndarray, stamp_ns: int, want_confidence: bool = True
                ) -> FrameResult:
        """rgb (H, W, 3) uint8 camera image -> FrameResult at (H, W)."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
            raise ConfigError(f'expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} '
                              f'{rgb.shape}')
        start = time.perf_counter()
        height, width = rgb.shape[:2]
        engine_input = resize_image(rgb, self.engine_size)  # h_e, w_e, 3
        resized = time.perf_counter()
        bank = self.bank.as_bank()
        decision = self.keyframes.decide(stamp_ns)  # with the latest odometry, before inference
        # the backend writes the embedding straight into the frame buffer's spare (float32)
        spare = self.frames.spare(self._embedding_shape)  # D, h, w
        outputs = self.backend.infer(engine_input, bank, self.temperature, embedding_out=spare)
        inferred = time.perf_counter()
        jumps = self.frames.jumps
        kept = decision.keep and self.frames.push(stamp_ns, spare, (height, width))
        if kept:
            self.keyframes.kept(decision)
        elif not decision.keep:
            self.keyframes.skipped(stamp_ns)  # a later patch for it misses with that reason
        frame = self.frames.lookup(stamp_ns) if kept else None
        stamp_jump = (None if self.frames.jumps == jumps else
                      f'frame stamp jumped {self.frames.last_jump_s:+.3f} s from the newest '
                      'buffered frame: ' + ('frame buffer restarted, bank kept'
                                            if self.frames.last_jump_s < 0 else
                                            'older frames age out'))
        if frame is not None and frame.embedding.dtype == np.float32:
            embedding = frame.embedding  # D, h, w read-only view of the slot
        else:  # float16 storage, or not kept: the float32 spare, reused by the next frame
            embedding = (outputs.embedding[0].view() if self.reuse_outputs
                         else outputs.embedding[0].copy())  # D, h, w
            embedding.flags.writeable = False
        buffered = time.perf_counter()
        cost, cost_data = self._plane('cost', height, width)
        confidence, confidence_data = (self._plane('confidence', height, width)
                                       if want_confidence else (None, None))
        self._to_camera(outputs.cost[0, 0], outputs.confidence[0, 0], cost, confidence)
        done = time.perf_counter()
        timings = StageTimings(*((b - a) * 1e3 for a, b in (
            (start, resized), (resized, inferred), (inferred, buffered), (buffered, done),
            (start, done))))
        payloads = Payloads(cost_data, confidence_data)
        size_change = (None if self._camera_size in (None, (height, width)) else
                       f'camera size changed {self._camera_size} -> {(height, width)}')
        self._camera_size = (height, width)
        return FrameResult(stamp_ns, embedding, cost, confidence, len(bank.costs), timings,
                           payloads, size_change, stamp_jump, kept)

    def _plane(self, name: str, height: int, width: int
               ) -> tuple[np.ndarray, array.array | None]:
        """An (H, W) float32 output array: the reused one (and its bytes) or a fresh one."""
        if not self.reuse_outputs:
            return np.empty((height, width), np.float32), None
        buffer = self._planes.get(name)
        if buffer is None or buffer.array.shape != (height, width):
            buffer = self._planes[name] = MessageBuffer((height, width), np.float32)
        return buffer.array, buffer.data

    def _to_camera(self, cost: np.ndarray, confidence: np.ndarray, cost_out: np.ndarray,
                   confidence_out: np.ndarray | None) -> None:
        """Engine-size (h_e, w_e) planes -> camera-size outputs, cost NaN where unknown, with
        no frame-sized temporaries. The unknown mask is applied without branches (a per-pixel
        masked write is several times slower on a real, patchy mask): cost x LUT[unknown],
        the LUT mapping False -> 1 and True -> NaN."""
        size = cost_out.shape[::-1]  # W, H
        if confidence_out is not None:
            resize_into(confidence, size, confidence_out)
            confidence = confidence_out
        elif confidence.shape != cost_out.shape:
            confidence = resize_image(confidence, size)
        if cost.shape != cost_out.shape:
            resize_into(cost, size, cost_out)
            cost = cost_out
        if self._unknown is None or self._unknown.shape != cost_out.shape:
            self._unknown = np.empty(cost_out.shape, bool)
            self._scale = np.empty(cost_out.shape, np.float32)
        np.less(confidence, self.min_confidence, out=self._unknown)
        _mask_lut(self._unknown, self._scale)
        np.multiply(cost, self._scale, out=cost_out)

    def add_odometry(self, stamp_ns: int, position_xyz: Any) -> OdometryUpdate:
        """The base position (x, y, z) in metres in the odom frame at `stamp_ns` (the header
        stamp of the odometry message): the next frames' keyframe decisions use the latest one
        received (keyframes.py). Never raises: the OdometryUpdate says what happened."""
        return self.keyframes.add_odometry(stamp_ns, position_xyz)

    def add_odometry_message(self, msg: Any) -> OdometryUpdate:
        """add_odometry for a nav_msgs/Odometry message (any object with its fields); only
        `header.stamp` and `pose.pose.position` are used."""
        try:
            stamp, position = codec.header_stamp_ns(msg.header), msg.pose.pose.position
            xyz = (position.x, position.y, position.z)
        except (codec.CodecError, AttributeError, TypeError, ValueError) as err:
            return self.keyframes.reject(f'undecodable odometry: {err}')
        return self.keyframes.add_odometry(stamp, xyz)

    def find_frame(self, stamp_ns: int) -> Lookup:
        """The buffered frame for a patch stamped `stamp_ns` (within stamp_tolerance_s), or
        why there is none: a frame that was processed but not kept as a keyframe says so
        (keyframes.MISS_NOT_KEYFRAME) rather than evicted or future."""
        tolerance_ns = round(self.config.stamp_tolerance_s * 1e9)
        lookup = self.frames.find(stamp_ns, tolerance_ns)
        if lookup.frame is None and self.keyframes.was_skipped(stamp_ns, tolerance_ns):
            return Lookup(None, self.keyframes.miss_reason())
        return lookup

    def add_patch_message(self, msg: Any) -> PatchResult:
        """add_patch for a sensor_msgs/Image patch_cost message (any object with its fields);
        an undecodable one is a PATCH_REJECTED result, not an exception."""
        try:
            mask, stamp = codec.image_to_array(msg), codec.header_stamp_ns(msg.header)
        except (codec.CodecError, AttributeError, TypeError, ValueError) as err:
            return PatchResult(-1, PATCH_REJECTED, f'undecodable patch_cost: {err}', None, None,
                               0.0)
        return self.add_patch(mask, stamp)

    def add_patch(self, mask: np.ndarray, stamp_ns: int) -> PatchResult:
        """mask (H, W) float measured cost, NaN = none, drawn on the frame at stamp_ns; at the
        frame's camera size or an integer downscale of it (e.g. 272x512 for 544x1024).

        Never raises for a bad mask or stamp: the PatchResult says what happened and why.
        """
        start = time.perf_counter()

        def result(status: str, reason: str | None, matched: int | None = None,
                   added: AddResult | None = None) -> PatchResult:
            return PatchResult(stamp_ns, status, reason, matched, added,
                               (time.perf_counter() - start) * 1e3)

        mask = np.asarray(mask)
        if mask.ndim != 2 or mask.dtype.kind != 'f' or 0 in mask.shape:
            return result(PATCH_REJECTED, f'a patch cost is an (H, W) float image (32FC1, NaN = '
                          f'no measurement), got {mask.dtype} {mask.shape}')
        try:
            lookup = self.find_frame(stamp_ns)
        except (TypeError, ValueError) as err:
            return result(PATCH_REJECTED, str(err))
        frame = lookup.frame
        if frame is None:
            return result(PATCH_MISS, lookup.reason)
        problem = _mask_size_problem(mask.shape, frame.image_size)
        if problem:
            return result(PATCH_REJECTED, problem, frame.stamp_ns)
        try:
            added = self.bank.add_patch(mask, frame.embedding, frame.stamp_ns)
        except BankError as err:
            return result(PATCH_REJECTED, str(err), frame.stamp_ns)
        if not self.frames.is_current(frame):
            # the frame was evicted and its slot reused while the bank read it; the bank took
            # prototypes of an unknown mix of two frames: rare (a patch on the oldest frame)
            # and counted, so the buffer settings can be fixed
            return result(PATCH_MISS, MISS_EVICTED + ' while being read', frame.stamp_ns, added)
        status = PATCH_ADDED if added.added + added.merged else PATCH_EMPTY
        return result(status, None, frame.stamp_ns, added)

    def reset(self) -> str:
        """Forget every prototype and buffered frame (the next frame is a keyframe)."""
        self.bank.reset()
        self.frames.clear()
        self.keyframes.reset()
        return 'bank and frame buffer cleared'


def _answer(action: Callable[[], str]) -> dict[str, Any]:
    """Trigger response fields from action() or its error."""
    try:
        return {'success': True, 'message': action()}
    except (BankError, OSError, ValueError, TypeError) as err:
        return {'success': False, 'message': str(err)}


def resize_into(plane: np.ndarray, size: tuple[int, int], out: np.ndarray) -> None:
    """Bilinear resize of an (h, w) plane into `out` (H, W) with size = (W, H); a copy when the
    sizes agree. Writes in place: no frame-sized allocation."""
    if plane.shape == out.shape:
        np.copyto(out, plane)
        return
    import cv2

    cv2.resize(plane, size, dst=out, interpolation=cv2.INTER_LINEAR)


_UNKNOWN_LUT = np.ones((1, 256), np.float32)
_UNKNOWN_LUT[0, 1] = np.nan  # False (known) -> 1, True (unknown) -> NaN


def _mask_lut(unknown: np.ndarray, out: np.ndarray) -> None:
    """(H, W) bool -> `out` (H, W) float32: 1 where known, NaN where unknown."""
    import cv2

    cv2.LUT(unknown.view(np.uint8), _UNKNOWN_LUT, dst=out)


def _mask_size_problem(mask_shape: tuple[int, ...], image_size: tuple[int, int]) -> str | None:
    """None if a mask of `mask_shape` fits a frame of `image_size` (equal, or both sides the
    same integer divisor of it); else what is wrong and what to send."""
    (mh, mw), (h, w) = mask_shape, image_size
    if (mh, mw) == (h, w):
        return None
    if h % mh == 0 and w % mw == 0 and h // mh == w // mw:
        return None
    return (f'patch mask is {mh}x{mw} but its frame was {h}x{w} (height x width): send a mask '
            'at the camera size or an integer downscale of it (the same factor on both sides)')


__all__ = ['PATCH_ADDED', 'PATCH_EMPTY', 'PATCH_MISS', 'PATCH_REJECTED', 'ConfigError',
           'FrameResult', 'Payloads', 'PatchResult', 'Pipeline', 'PipelineConfig',
           'StageTimings', 'check_propagation']

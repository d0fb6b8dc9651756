"""A bounded ring buffer of past frames' embeddings, keyed by the camera stamp in nanoseconds.

A patch-cost mask arrives after the image it was drawn on (the robot has to drive over the
terrain first), so the node keeps the stride-4 embeddings of recent frames and looks the mask's
frame up by its `header.stamp`. The buffer is bounded two ways:

- by count: at most `max_frames` frames; when full, the frame with the oldest stamp goes
  (so out-of-order pushes are fine: the buffer always holds the newest stamps it was given);
- by age: a frame older than `max_age_s` before the newest stamp goes, whatever the count.

A stamp more than `max_age_s` away from the newest one is a clock jump, counted in `jumps`: back
in time (a looped bag, a restarted simulator, or the first normal frame after a bogus far-future
stamp) it restarts the buffer, so the frames after it are kept and matched again.

Storage: `dtype` float16 (the default) or float32. The embeddings are unit-norm, so float16
keeps them to about 3 significant digits (relative error <= 2^-11 per value) at half the memory;
consumers read `Frame.embedding` in the storage dtype (the bank averages the selected pixels in
float64). float32 stores the backend's output unchanged.

Memory: the frames live in at most `max_frames` preallocated slots of D x h x w values in the
storage dtype (a slot is allocated the first time the buffer needs it and reused after an
eviction, so a buffer in steady state allocates nothing per frame), plus one float32 array of
the same shape that the backend writes the next frame's embedding into (`spare`):

- float32: the spare is one more slot, kept without a copy when pushed: (max_frames + 1) x
  D x h x w x 4 bytes;
- float16: the spare is a float32 scratch array, converted into a float16 slot on push (one
  copy, 0.3 ms for 2.2 M values with OpenCV's conversion on the 2-core development VM):
  max_frames x D x h x w x 2 + D x h x w x 4 bytes.

`memory_bound_bytes` is that bound. For D = 64 at a 544x1024 input (stride 4: h, w = 136, 256) a
frame is 136 x 256 x 64 x 2 = 4.46 MB in float16 (8.91 MB in float32), so the default buffer of
30 frames takes at most 30 x 4.46 + 8.91 = 142.6 MB in float16 (31 x 8.91 = 276.3 MB in float32).

Layout: a slot holds the embedding as (D, h, w), the backend's layout, so it is written by the
backend itself (`spare`, float32) or by one plain copy or conversion (a transposing copy into a
slot that is not in the cache costs about three times as much, bench/RESULTS.md);
`Frame.embedding` is a read-only view of it. A slot is overwritten only after its frame was
evicted; a reader that held an evicted frame can tell with `is_current(frame)` (each write bumps
the slot's generation), which `Pipeline.add_patch` checks after using the embedding.

Thread-safe: one lock guards every method (the node pushes from the image callback and looks
up from the patch-cost callback, which may run on different executor threads).
"""

from __future__ import annotations

import bisect
import logging
import math
import operator
import threading
from typing import Any, NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

STORAGE_DTYPES = ('float16', 'float32')  # FrameBuffer(dtype=...), params: buffer_dtype

# Why `find` missed (`Lookup.reason`); None on a hit.
MISS_EMPTY = 'empty'
MISS_EVICTED = 'evicted (older than the oldest kept frame)'
MISS_FUTURE = 'future (newer than the newest frame)'
MISS_NO_MATCH = 'no frame within tolerance'


class Frame(NamedTuple):
    stamp_ns: int  # the camera image's header.stamp in integer nanoseconds
    embedding: np.ndarray  # D, h, w (stride 4) C-contiguous read-only view of the slot, in the
    #                         buffer's dtype (float16 or float32)
    image_size: tuple[int, int]  # (height, width) of the original camera image
    slot: int  # which slot holds it
    generation: int  # the slot's write count when this frame was stored (is_current)


class _Slot:
    """One preallocated frame: the (D, h, w) array in the storage dtype and its write count."""

    def __init__(self, shape: tuple[int, int, int], dtype: np.dtype) -> None:
        self.array = np.zeros(shape, dtype)  # zeros: pages touched now
        self.generation = 0


class Lookup(NamedTuple):
    frame: Frame | None  # the exact or nearest frame within tolerance; None on a miss
    reason: str | None  # one of the MISS_* strings on a miss; None on a hit


def storage_dtype(dtype: Any) -> np.dtype:
    """`dtype` as float16 or float32 (a name, a numpy type or dtype); ValueError otherwise."""
    try:
        checked = np.dtype(dtype)
    except TypeError:
        checked = None
    if dtype is None or checked is None or checked.name not in STORAGE_DTYPES:
        raise ValueError(f'frame buffer dtype must be float16 or float32, got {dtype!r}: '
                         'float16 halves the memory (unit-norm embeddings keep about 3 '
                         'significant digits), float32 stores the backend output unchanged '
                         '(parameter buffer_dtype)')
    return np.dtype(checked.name)  # native byte order


def frame_bytes(embedding_dim: int, height: int, width: int, dtype: Any = np.float16) -> int:
    """Bytes of one stored frame's embedding: D x h x w x 2 (float16) or x 4 (float32)."""
    return embedding_dim * height * width * storage_dtype(dtype).itemsize


class FrameBuffer:
    """Past frames' embeddings by stamp, bounded by `max_frames` and by `max_age_s`, stored as
    `dtype` (float16 or float32; see the module docstring)."""

    def __init__(self, max_frames: int, max_age_s: float, dtype: Any = np.float16) -> None:
        if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
            raise ValueError(f'max_frames must be an int >= 1, got {max_frames!r}; it bounds '
                             'the memory of the buffer (see memory_bound_bytes)')
        if not 0 < max_age_s < math.inf:  # also rejects NaN
            raise ValueError(f'max_age_s must be finite and > 0 seconds, got {max_age_s!r}; '
                             'set it to the longest delay between an image and its patch-cost '
                             'mask')
        self.dtype = storage_dtype(dtype)
        self._direct = self.dtype == np.float32  # the spare is a slot, kept without a copy
        self._slot_limit = max_frames + 1 if self._direct else max_frames
        self.max_frames = max_frames
        self.max_age_s = float(max_age_s)
        self._max_age_ns = round(self.max_age_s * 1e9)
        self._stamps: list[int] = []  # sorted ascending
        self._frames: dict[int, Frame] = {}
        self._slots: list[_Slot] = []  # allocated on demand, at most _slot_limit
        self._free: list[int] = []  # slot indices not holding a frame (nor the spare)
        self._spare: int | None = None  # float32: the slot reserved by spare(), until pushed
        self._scratch: np.ndarray | None = None  # float16: D, h, w float32 spare()
        self._jumps = 0
        self.last_jump_s = 0.0  # the newest jump's size (negative: back in time)
        self._shape: tuple[int, int, int] | None = None  # D, h, w of the slots
        self._frame_bytes = 0  # bytes of one slot (0 before any push)
        self._spare_bytes = 0  # float16: bytes of the float32 scratch (0 before any push)
        self._evicted = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._stamps)

    @property
    def stamps(self) -> tuple[int, ...]:
        """Stamps of the frames held, oldest first."""
        with self._lock:
            return tuple(self._stamps)

    @property
    def evicted(self) -> int:
        """Frames dropped by count or age (or pushed already too old) since the last clear()."""
        with self._lock:
            return self._evicted

    @property
    def memory_bound_bytes(self) -> int:
        """The most the buffer allocates for the current frame shape (0 before any push or
        spare): float32, (max_frames + 1) x D x h x w x 4 (the frames and the spare slot);
        float16, max_frames x D x h x w x 2 + D x h x w x 4 (the frames and the float32
        scratch)."""
        with self._lock:
            return self._slot_limit * self._frame_bytes + self._spare_bytes

    @property
    def nbytes(self) -> int:
        """Bytes of the embeddings held now."""
        with self._lock:
            return len(self._frames) * self._frame_bytes

    def clear(self) -> None:
        """Forget every frame (the slots stay allocated for reuse)."""
        with self._lock:
            self._stamps.clear()
            self._frames.clear()
            for slot in self._slots:
                slot.generation += 1  # frames handed out before are no longer current
            self._free = [i for i in range(len(self._slots)) if i != self._spare]
            self._evicted = 0

    def is_current(self, frame: Frame) -> bool:
        """False once `frame`'s slot was reused (or cleared): its embedding is then another
        frame's. Check it after reading a frame on another thread than the one pushing."""
        with self._lock:
            return (frame.slot < len(self._slots)
                    and self._slots[frame.slot].generation == frame.generation
                    and self._frames.get(frame.stamp_ns) is frame)

    def push(self, stamp_ns: int, embedding: np.ndarray, image_size: tuple[int, int]) -> bool:
        """Store `embedding` (D, h, w) or (1, D, h, w) under `stamp_ns` (copied or converted
        into a slot; the float32 spare slot is kept as it is).

        `image_size` is the (height, width) of the camera image the embedding was computed from.
        A frame with a stamp already held replaces it. Returns False when the frame is older than
        `max_age_s` before the newest stamp (or older than every kept frame of a full buffer):
        it is not kept. An embedding of another shape than the frames held empties the buffer
        (the model changed) and reallocates the slots.
        """
        stamp = as_stamp_ns(stamp_ns)
        array_ = as_embedding(embedding)
        size = _image_size(image_size)
        with self._lock:
            self._detect_jump(stamp)
            if not self._admits(stamp):
                self._evicted += 1
                logger.debug('frame %d not kept: older than max_age_s=%g before the newest '
                             'frame or than every kept frame', stamp, self.max_age_s)
                return False
            if self._shape != array_.shape:
                self._reshape(array_.shape)
            old = self._frames.pop(stamp, None)
            if old is not None:
                self._stamps.remove(stamp)
                self._free.append(old.slot)
            direct = (self._spare is not None and array_.dtype == self.dtype
                      and array_.ctypes.data == self._slots[self._spare].array.ctypes.data)
            if direct:  # already written into the spare slot (the backend's output)
                index, self._spare = self._spare, None
            else:
                index = self._take_slot()
            slot = self._slots[index]
            slot.generation += 1
            generation = slot.generation
        if not direct:
            _store(slot.array, array_)  # the one copy, outside the lock
        embedding = slot.array.view()
        embedding.flags.writeable = False
        frame = Frame(stamp, embedding, size, index, generation)
        with self._lock:
            if slot.generation != generation:  # cleared or reshaped meanwhile
                return False
            bisect.insort(self._stamps, stamp)
            self._frames[stamp] = frame
            self._evict()
        return True

    def _detect_jump(self, stamp: int) -> None:
        """A stamp more than max_age_s from the newest one held is a clock jump (a looped bag, a
        restarted simulator, a bogus far-future stamp), not an old frame: count it, and on a
        jump back restart the buffer, so learning goes on at the new time (the bank is not
        touched). A jump ahead needs nothing more: the frames held age out. Caller holds the
        lock."""
        if not self._stamps:
            return
        step = stamp - self._stamps[-1]
        if abs(step) <= self._max_age_ns:
            return
        self._jumps += 1
        self.last_jump_s = step / 1e9
        if step < 0:
            logger.debug('stamp jumped back %.3f s: frame buffer restarted', -step / 1e9)
            for frame in self._frames.values():
                self._free.append(frame.slot)
                self._slots[frame.slot].generation += 1
            self._stamps.clear()
            self._frames.clear()

    @property
    def jumps(self) -> int:
        """Clock jumps seen (stamps more than max_age_s before or after the newest frame)."""
        with self._lock:
            return self._jumps

    def _admits(self, stamp: int) -> bool:
        """Whether a frame stamped `stamp` would survive eviction. Caller holds the lock."""
        if not self._stamps:
            return True
        newest = max(self._stamps[-1], stamp)
        if stamp < newest - self._max_age_ns:
            return False
        full = len(self._stamps) >= self.max_frames and stamp not in self._frames
        return not (full and stamp < self._stamps[0])

    def _reshape(self, shape: tuple[int, ...]) -> None:
        """New slot shape: forget the frames and the slots. Caller holds the lock."""
        if self._shape is not None:
            logger.info('embedding shape changed %s -> %s: frame buffer emptied',
                        self._shape, shape)
        self._stamps.clear()
        self._frames.clear()
        for slot in self._slots:
            slot.generation += 1
        self._slots.clear()
        self._free.clear()
        self._spare = None
        self._scratch = None
        D, h, w = shape
        self._shape = (D, h, w)
        self._frame_bytes = frame_bytes(D, h, w, self.dtype)
        self._spare_bytes = 0 if self._direct else frame_bytes(D, h, w, np.float32)

    def spare(self, shape: tuple[int, int, int]) -> np.ndarray:
        """A writable (D, h, w) float32 array holding no frame: let the backend write the next
        embedding into it (Backend.infer's embedding_out), then `push` it. float32 storage: a
        slot, kept by `push` without a copy, reserved until pushed (at most one exists).
        float16 storage: one preallocated scratch array, converted into a float16 slot by
        `push` and reused for the next frame (write it from one thread)."""
        shape = tuple(int(v) for v in shape)
        with self._lock:
            if self._shape != shape:
                self._reshape(shape)
            if not self._direct:
                if self._scratch is None:
                    self._scratch = np.zeros(shape, np.float32)  # D, h, w; pages touched now
                return self._scratch
            if self._spare is None:
                self._spare = self._take_slot(allow_evict=False)
            return self._slots[self._spare].array

    def _take_slot(self, allow_evict: bool = True) -> int:
        """A free slot index, allocating one while fewer than the limit exist (float32: the
        frames and the spare, max_frames + 1; float16: max_frames); when every slot is taken,
        the oldest frame's (push checked that the new frame outlives it). Caller holds the
        lock."""
        if self._free:
            return self._free.pop()
        if len(self._slots) < self._slot_limit or not allow_evict:
            self._slots.append(_Slot(self._shape, self.dtype))
            return len(self._slots) - 1
        oldest = self._stamps.pop(0)
        self._evicted += 1
        return self._frames.pop(oldest).slot

    def find(self, stamp_ns: int, tolerance_ns: int = 0) -> Lookup:
        """The frame stamped `stamp_ns`, else the nearest one within `tolerance_ns` (the earlier
        on a tie), with the reason on a miss."""
        stamp = as_stamp_ns(stamp_ns)
        tolerance = as_stamp_ns(tolerance_ns)
        if tolerance < 0:
            raise ValueError(f'tolerance_ns must be >= 0, got {tolerance}')
        with self._lock:
            if not self._stamps:
                return Lookup(None, MISS_EMPTY)
            exact = self._frames.get(stamp)
            if exact is not None:
                return Lookup(exact, None)
            i = bisect.bisect_left(self._stamps, stamp)
            # Neighbours: the latest stamp before and the earliest stamp after.
            candidates = self._stamps[max(i - 1, 0):i + 1]
            best = min(candidates, key=lambda s: (abs(s - stamp), s))
            if abs(best - stamp) <= tolerance:
                return Lookup(self._frames[best], None)
            if stamp < self._stamps[0]:
                return Lookup(None, MISS_EVICTED)
            if stamp > self._stamps[-1]:
                return Lookup(None, MISS_FUTURE)
            return Lookup(None, MISS_NO_MATCH)

    def lookup(self, stamp_ns: int, tolerance_ns: int = 0) -> Frame | None:
        """The exact frame, else the nearest within `tolerance_ns`; None on a miss (see
        `miss_reason` or use `find` to get both at once)."""
        return self.find(stamp_ns, tolerance_ns).frame

    def miss_reason(self, stamp_ns: int, tolerance_ns: int = 0) -> str | None:
        """Why `lookup(stamp_ns, tolerance_ns)` misses (a MISS_* string); None if it hits."""
        return self.find(stamp_ns, tolerance_ns).reason

    def _evict(self) -> None:
        """Drop frames older than max_age before the newest, then the oldest beyond max_frames.

        Caller holds the lock."""
        oldest_kept = self._stamps[-1] - self._max_age_ns
        cut = bisect.bisect_left(self._stamps, oldest_kept)  # stamps[:cut] are too old
        cut = max(cut, len(self._stamps) - self.max_frames)
        if cut > 0:
            for stamp in self._stamps[:cut]:
                self._free.append(self._frames.pop(stamp).slot)
            del self._stamps[:cut]
            self._evicted += cut


def _store(slot: np.ndarray, embedding: np.ndarray) -> None:
    """Copy (D, h, w) `embedding` into `slot`, converting to its dtype. float32 -> float16 goes
    through OpenCV (0.3 ms for 64 x 136 x 256 on the development VM, numpy's cast 5.7 ms; both
    round to nearest even) where it has cv2.convertFp16."""
    import cv2  # lazy, as everywhere in the runtime: a core dependency (python3-opencv)

    if (slot.dtype == np.float16 and embedding.dtype == np.float32
            and embedding.flags.c_contiguous and hasattr(cv2, 'convertFp16')):
        rows = slot.shape[0] * slot.shape[1]
        out = slot.view(np.int16).reshape(rows, slot.shape[2])  # D*h, w: OpenCV's fp16 carrier
        written = cv2.convertFp16(embedding.reshape(rows, slot.shape[2]), out)
        if np.shares_memory(written, out):
            return
    np.copyto(slot, embedding, casting='same_kind')


def as_stamp_ns(value: int) -> int:
    """`value` as an int stamp in nanoseconds; TypeError for bools, floats and the like."""
    if isinstance(value, bool):
        raise TypeError(f'stamps are integer nanoseconds, got {value!r}')
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f'stamps are integer nanoseconds, got {type(value).__name__} '
                        f'{value!r}; use sec * 10**9 + nanosec from the header stamp') from None


def as_embedding(embedding: np.ndarray) -> np.ndarray:
    """A (D, h, w) view of a (D, h, w) or (1, D, h, w) embedding; ValueError otherwise."""
    array = np.asarray(embedding)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(f'embedding must be (D, h, w) or (1, D, h, w) with no empty axis, '
                         f'got {array.shape}; pass the backend output for one image')
    return array


def _image_size(image_size: tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = (operator.index(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f'image_size must be (height, width) ints, got {image_size!r}') from None
    if height < 1 or width < 1:
        raise ValueError(f'image_size must be positive (height, width), got {image_size!r}')
    return height, width

"""Deterministic synthetic off-road scenes, written in the raw YCOR (yamaha_v0) layout.

A scene is a pinhole view of a flat ground plane: a sky gradient (with clouds), a tree line of
high vegetation at the horizon, and a perspective ground with grass, a curving trail (smooth,
rough or both) that narrows towards the horizon, patches of low vegetation, puddles and rocks.
Textures are scikit-image's bundled grass/gravel/brick photographs, tinted per class, mapped
through the ground-plane geometry (mip-mapped per row, so distant texture is averaged rather than
aliased) and varied per scene. Labels are the very masks used for painting, so they are exact;
some class boundaries get thin unlabelled seams (255), as real polygon labels leave gaps.

`render_scene(rng, height, width)` is a pure function of its arguments (also used to generate
test rosbags); `write_synthetic_ycor` writes a data set that goes through `convert_ycor` exactly
like the real archive: synth -> convert-ycor -> train.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .ycor import IGNORE_INDEX, RAW_PALETTE, YCOR_PALETTE, atomic_directory

if TYPE_CHECKING:
    from PIL import Image

_logger = logging.getLogger(__name__)

# Training ids (index into YCOR_CLASSES).
HIGH_VEGETATION, GRASS, SMOOTH_TRAIL, OBSTACLE, SKY, ROUGH_TRAIL, PUDDLE, LOW_VEGETATION = range(8)

JPEG_QUALITY = 95
_MAX_DEPTH = 400.0      # metres; rows at or above the horizon are clamped to this depth
_REFERENCE_WIDTH = 1024  # texture scales are tuned for this width and follow the focal length


def _raw_index_lut() -> np.ndarray:
    """256-entry map from training id (255 = ignore) to the raw palette index (docs/MODEL.md
    §5.2)."""
    lut = np.zeros(256, dtype=np.uint8)  # everything else -> 0, the white background
    for train_id, color in enumerate(YCOR_PALETTE):
        lut[train_id] = RAW_PALETTE.index(color)
    return lut


_RAW_INDEX = _raw_index_lut()


@functools.lru_cache(maxsize=1)
def _texture_pyramids() -> dict[str, tuple[np.ndarray, ...]]:
    """Zero-mean, unit-std grey textures and their wrap-around mip levels (512 ... 16 px)."""
    import cv2
    from skimage import data

    pyramids = {}
    for name, load in (('grass', data.grass), ('gravel', data.gravel), ('brick', data.brick)):
        tex = load().astype(np.float32)  # 512, 512
        tex = np.clip((tex - tex.mean()) / tex.std(), -3.0, 3.0)
        levels = [tex]
        while levels[-1].shape[0] > 16:
            padded = np.pad(levels[-1], 4, mode='wrap')
            blurred = cv2.GaussianBlur(padded, (5, 5), 1.0)[4:-4, 4:-4]
            levels.append(np.ascontiguousarray(blurred[::2, ::2]))
        pyramids[name] = tuple(levels)
    return pyramids


def _sample(level_tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear, wrap-around sampling of one texture level at texel coordinates (u, v)."""
    import cv2

    # reason: remap converts coordinates to 16-bit fixed point, so wrap them into range first
    return cv2.remap(level_tex, _wrap(u, level_tex.shape[1]), _wrap(v, level_tex.shape[0]),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def _wrap(x: np.ndarray, n: int) -> np.ndarray:
    """x mod n as float32 (floor form: much faster than np.mod on floats)."""
    x = np.asarray(x, dtype=np.float32)
    return x - np.floor(x * np.float32(1.0 / n)) * np.float32(n)


def _mip_level(texels_per_pixel: np.ndarray | float, num_levels: int) -> np.ndarray:
    footprint = np.maximum(np.asarray(texels_per_pixel, dtype=np.float64), 1.0)
    return np.clip(np.floor(np.log2(footprint) + 0.5), 0, num_levels - 1).astype(np.int64)


def _smooth_noise(rng: np.random.Generator, height: int, width: int,
                  cells: tuple[int, int]) -> np.ndarray:
    """Low-frequency noise: a (cells_y, cells_x) normal grid upsampled bicubically to H, W."""
    import cv2

    grid = rng.standard_normal(cells).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _noise_1d(rng: np.random.Generator, length: int, cells: int) -> np.ndarray:
    import cv2

    grid = rng.standard_normal((1, cells)).astype(np.float32)
    return cv2.resize(grid, (length, 1), interpolation=cv2.INTER_CUBIC)[0]


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class _Camera:
    """Pinhole camera over a flat ground; per-row depth and per-pixel lateral offset."""

    height: int
    width: int
    focal: float      # pixels
    cx: float         # principal point column
    horizon: float    # horizon row (float)
    cam_height: float  # metres above the ground
    depth: np.ndarray  # H, 1 forward distance Z of each row's ground point (clamped)
    lateral: np.ndarray  # H, W lateral ground offset X

    @classmethod
    def draw(cls, rng: np.random.Generator, height: int, width: int) -> _Camera:
        focal = width * rng.uniform(0.55, 0.7)
        cx = width * (0.5 + rng.uniform(-0.05, 0.05))
        horizon = height * rng.uniform(0.28, 0.46)
        cam_height = rng.uniform(1.3, 1.9)
        rows = np.arange(height, dtype=np.float32)[:, None] + 0.5  # H, 1
        below = np.maximum(rows - horizon, 1e-3)
        depth = np.minimum(cam_height * focal / below, _MAX_DEPTH).astype(np.float32)  # H, 1
        cols = np.arange(width, dtype=np.float32)[None, :] + 0.5  # 1, W
        lateral = ((cols - cx) * depth / focal).astype(np.float32)  # H, W
        return cls(height, width, focal, cx, horizon, cam_height, depth, lateral)

    @property
    def near_depth(self) -> float:
        return float(self.depth[-1, 0])

    def project(self, x: float, z: float) -> tuple[float, float]:
        """Image (column, row) of the ground point (X, Z)."""
        return self.cx + x * self.focal / z, self.horizon + self.cam_height * self.focal / z


class _Layout:
    """The label map before seams, built from geometric masks in painting order."""

    def __init__(self, rng: np.random.Generator, cam: _Camera):
        H, W = cam.height, cam.width
        self.cam = cam
        self.labels = np.full((H, W), SKY, dtype=np.uint8)  # H, W
        rows = np.arange(H, dtype=np.float32)[:, None]  # H, 1
        cols = np.arange(W, dtype=np.float32)[None, :]  # 1, W
        # Tree line: a bumpy band of high vegetation ending slightly below the horizon.
        base = rng.uniform(0.02, 0.2)
        bumps = (0.5 * np.abs(_noise_1d(rng, W, 6)) + 0.25 * _noise_1d(rng, W, 24)
                 + 0.08 * _noise_1d(rng, W, 96))
        top = cam.horizon - H * np.maximum(base + 0.08 * bumps, 0.005)  # W
        bottom = cam.horizon + H * 0.012 * np.abs(_noise_1d(rng, W, 12))  # W
        ground = rows >= bottom[None, :]  # H, W
        self.labels[(rows >= top[None, :]) & ~ground] = HIGH_VEGETATION
        self.labels[ground] = GRASS
        self._ground_classes(rng, ground)
        self._obstacles(rng)
        if rng.random() < 0.45:  # a tree mass at one side, in front of everything else
            left = rng.random() < 0.5
            edge = W * rng.uniform(0.06, 0.3) * (1.0 + 0.3 * _noise_1d(rng, H, 8))  # H
            lowest = cam.horizon + (H - cam.horizon) * rng.uniform(0.05, 0.6)
            lowest = lowest + H * 0.04 * _noise_1d(rng, W, 10)  # W
            dist = cols if left else (W - 1 - cols)
            self.labels[(dist < edge[:, None]) & (rows < lowest[None, :])] = HIGH_VEGETATION

    def _trail_mask(self, rng: np.random.Generator, half_width: float,
                    wiggle: np.ndarray) -> np.ndarray:
        """Signed lateral distance (H, W) to a random trail centre line, scaled by its width."""
        cam = self.cam
        dz = cam.depth - cam.near_depth  # H, 1
        x0 = rng.uniform(-0.35, 0.35) * cam.lateral[-1, -1]
        centre = (x0 + rng.uniform(-0.2, 0.2) * dz + rng.uniform(-0.012, 0.012) * dz ** 2
                  + rng.uniform(0.0, 0.6) * np.sin(dz / rng.uniform(4.0, 12.0)
                                                   + rng.uniform(0, 2 * math.pi)))
        return (cam.lateral - centre) / (half_width * (1.0 + 0.15 * wiggle))  # H, W

    def _ground_noise(self, rng: np.random.Generator, cell: float,
                      stretch: float = 1.0) -> np.ndarray:
        """Smooth noise (H, W) anchored on the ground plane; `cell` metres per grid cell."""
        import cv2

        n = 64
        grid = rng.standard_normal((n, n)).astype(np.float32)
        u = self.cam.lateral / cell + rng.uniform(0, n)
        v = np.broadcast_to(self.cam.depth / (cell * stretch), u.shape) + rng.uniform(0, n)
        return cv2.remap(grid, _wrap(u, n), _wrap(v, n), cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_WRAP)

    def _ground_classes(self, rng: np.random.Generator, ground: np.ndarray) -> None:
        labels = self.labels
        edge = self._ground_noise(rng, 0.6)
        d = np.abs(self._trail_mask(rng, rng.uniform(0.55, 1.25), edge))  # H, W
        kind = rng.choice(('smooth', 'rough', 'mixed', 'two_track'), p=(0.3, 0.3, 0.28, 0.12))
        main, other = (SMOOTH_TRAIL, ROUGH_TRAIL) if rng.random() < 0.5 else (
            ROUGH_TRAIL, SMOOTH_TRAIL)
        if kind == 'smooth':
            main = SMOOTH_TRAIL
        elif kind == 'rough':
            main = ROUGH_TRAIL
        trail = ground & (d < 1.0)
        trail_area = trail | (ground & (d < 1.6))  # the trail and its verge: no low vegetation
        # Low vegetation: patches of a ground-anchored noise field, denser towards the distance.
        if rng.random() < 0.88:
            field = self._ground_noise(rng, rng.uniform(1.5, 4.0), rng.uniform(1.0, 3.0))
            field += 0.35 * edge
            if rng.random() < 0.5:
                field += rng.uniform(0.5, 1.5) * _smoothstep(self.cam.depth, 15.0, 60.0)
            eligible = ground & ~trail_area & (self.cam.depth < 55.0)  # no sub-pixel specks
            sample = field[::4, ::4][eligible[::4, ::4]]
            if sample.size:
                cut = np.quantile(sample, 1.0 - rng.uniform(0.08, 0.45))
                labels[eligible & (field > cut)] = LOW_VEGETATION
        if rng.random() < 0.3:  # rough gravel patches on the grass
            field = self._ground_noise(rng, rng.uniform(1.0, 2.5))
            labels[ground & ~trail_area & (field > rng.uniform(1.2, 1.8))] = ROUGH_TRAIL
        if rng.random() < 0.3:  # a second trail, e.g. a fork
            d2 = np.abs(self._trail_mask(rng, rng.uniform(0.4, 0.9), edge))
            labels[ground & (d2 < 1.0)] = other if rng.random() < 0.6 else main
        labels[trail] = main
        if kind == 'mixed':
            labels[trail & (d < rng.uniform(0.4, 0.7))] = other
        elif kind == 'two_track':
            labels[trail & (d < rng.uniform(0.25, 0.45))] = GRASS
        if rng.random() < 0.3:  # the surface changes further along the trail
            switch = self.cam.near_depth + rng.uniform(4.0, 20.0)
            far = trail & (self.cam.depth > switch)
            swapped = np.where(labels == SMOOTH_TRAIL, ROUGH_TRAIL, SMOOTH_TRAIL)
            labels[far] = swapped[far]
        if rng.random() < 0.6:  # puddles near the trail
            cam = self.cam
            for _ in range(int(rng.integers(1, 3))):
                zc = cam.near_depth + rng.uniform(0.3, 8.0)
                row = int(np.clip(np.searchsorted(-cam.depth[:, 0], -zc), 0, cam.height - 1))
                on_trail = np.nonzero(trail[row])[0]
                col = int(rng.choice(on_trail)) if on_trail.size else int(
                    rng.integers(0, cam.width))
                xc = float(cam.lateral[row, col])
                rx, rz = rng.uniform(0.3, 1.0), rng.uniform(0.5, 1.8)
                shape = (((cam.lateral - xc) / rx) ** 2 + ((cam.depth - zc) / rz) ** 2
                         + 0.25 * edge)
                labels[ground & (shape < 1.0)] = PUDDLE

    def _obstacles(self, rng: np.random.Generator) -> None:
        import cv2

        if rng.random() >= 0.62:
            return
        cam = self.cam
        rocks = []
        for _ in range(int(rng.integers(1, 5))):
            z = cam.near_depth + 18.0 * rng.random() ** 2 + 0.3
            x = rng.uniform(-0.48, 0.48) * cam.width * z / cam.focal
            radius = rng.uniform(0.12, 0.55)  # metres
            log = rng.random() < 0.2
            rocks.append((z, x, radius, log))
        mask = np.zeros((cam.height, cam.width), dtype=np.uint8)
        for z, x, radius, log in sorted(rocks, reverse=True):  # far first
            col, row = cam.project(x, z)
            rx = max(radius * cam.focal / z * (rng.uniform(2.0, 3.5) if log else 1.0), 2.0)
            ry = max(radius * cam.focal / z * rng.uniform(0.55, 1.0), 2.0)
            angles = np.linspace(0.0, 2 * math.pi, 16, endpoint=False)
            wobble = 1.0 + 0.18 * rng.standard_normal(16)
            px = col + rx * wobble * np.cos(angles)
            py = row - 0.6 * ry + ry * wobble * np.sin(angles)
            py = np.minimum(py, row + 0.15 * ry)  # flat-ish bottom resting on the ground
            points = np.round(np.stack([px, py], axis=1) * 16).astype(np.int32)  # 16, 2
            mask[:] = 0
            cv2.fillPoly(mask, [points], 1, lineType=cv2.LINE_8, shift=4)
            self.labels[mask.astype(bool)] = OBSTACLE


def _seams(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Mask (H, W) of thin unlabelled gaps along parts of the class boundaries."""
    import cv2

    H, W = labels.shape
    boundary = np.zeros((H, W), dtype=bool)
    boundary[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    boundary[1:] |= labels[1:] != labels[:-1]
    if rng.random() < 0.2:
        return np.zeros_like(boundary)
    gate = _smooth_noise(rng, H, W, (6, 10)) > rng.uniform(-0.6, 0.6)
    seams = boundary & gate
    if W >= 512 and rng.random() < 0.5:
        seams = cv2.dilate(seams.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool)
    return seams


def _jitter(rng: np.random.Generator, base: tuple[float, float, float],
            spread: tuple[float, float, float]) -> np.ndarray:
    return np.asarray(base, np.float32) + rng.uniform(-1, 1, 3).astype(np.float32) * spread


class _Painter:
    """Per-class appearance, evaluated only over the rows a class occupies."""

    def __init__(self, rng: np.random.Generator, cam: _Camera):
        self.cam = cam
        self.tex = _texture_pyramids()
        self.scale = cam.focal / (0.62 * _REFERENCE_WIDTH)  # focal relative to the tuning
        self.sky_top = _jitter(rng, (70, 125, 205), (20, 20, 25))
        self.sky_horizon = _jitter(rng, (185, 205, 228), (15, 12, 12))
        self.colors = {
            HIGH_VEGETATION: _jitter(rng, (48, 72, 30), (12, 14, 10)),
            GRASS: _jitter(rng, (128, 152, 68), (18, 18, 14)),
            SMOOTH_TRAIL: _jitter(rng, (178, 166, 140), (14, 14, 14)),
            OBSTACLE: _jitter(rng, (118, 112, 106), (18, 16, 16)),
            ROUGH_TRAIL: _jitter(rng, (128, 90, 60), (14, 12, 10)),
            PUDDLE: 0.5 * self.sky_horizon + _jitter(rng, (30, 28, 24), (8, 8, 8)),
            LOW_VEGETATION: _jitter(rng, (55, 104, 34), (10, 14, 10)),
        }
        # Ground textures: (texture, texels per metre, amplitude, anisotropy) per class.
        self.ground_tex = {
            GRASS: [('grass', 260.0, 0.22, 1.0), ('gravel', 60.0, 0.08, 1.0)],
            LOW_VEGETATION: [('grass', 120.0, 0.42, 2.2)],
            SMOOTH_TRAIL: [('gravel', 700.0, 0.07, 1.0), ('grass', 40.0, 0.04, 1.0)],
            ROUGH_TRAIL: [('gravel', 220.0, 0.32, 1.0), ('brick', 90.0, 0.08, 1.0)],
            PUDDLE: [('gravel', 400.0, 0.04, 3.0)],
        }
        self.offsets = {key: (rng.uniform(0, 512, 2), rng.uniform(0, 2 * math.pi))
                        for key in range(8)}
        self.clouds = rng.uniform(0.0, 0.8) if rng.random() < 0.6 else 0.0
        self.cloud_field = _smooth_noise(rng, cam.height, cam.width, (12, 6))
        self.shadow = 1.0 + rng.uniform(0.0, 0.12) * _smooth_noise(
            rng, cam.height, cam.width, (5, 8))
        self.haze = rng.uniform(0.15, 0.5), rng.uniform(30.0, 120.0)
        self.veg_scale = rng.uniform(0.7, 1.5)
        self.rock_tex = 'brick' if rng.random() < 0.6 else 'gravel'

    def paint(self, labels: np.ndarray) -> np.ndarray:
        """(H, W, 3) float32 RGB for a label map without seams."""
        H, W = labels.shape
        image = np.zeros((H, W, 3), dtype=np.float32)
        for cls in range(8):
            mask = labels == cls
            rows = np.nonzero(mask.any(axis=1))[0]
            if not rows.size:
                continue
            r0, r1 = int(rows[0]), int(rows[-1]) + 1
            slab = self._appearance(cls, r0, r1, mask[r0:r1])  # h, W, 3
            np.copyto(image[r0:r1], slab, where=mask[r0:r1, :, None])
        image *= np.where(labels == SKY, np.float32(1.0), self.shadow)[..., None]
        return image

    def _appearance(self, cls: int, r0: int, r1: int, mask: np.ndarray) -> np.ndarray:
        if cls == SKY:
            return self._sky(r0, r1)
        if cls == HIGH_VEGETATION:
            return self._vegetation(r0, r1)
        if cls == OBSTACLE:
            return self._rocks(r0, r1, mask)
        return self._ground(cls, r0, r1)

    def _sky(self, r0: int, r1: int) -> np.ndarray:
        rows = (np.arange(r0, r1, dtype=np.float32) + 0.5) / max(self.cam.horizon, 1.0)
        t = np.clip(rows, 0.0, 1.0)[:, None, None] ** 0.7  # h, 1, 1
        sky = (1 - t) * self.sky_top + t * self.sky_horizon  # h, 1, 3
        sky = np.broadcast_to(sky, (r1 - r0, self.cam.width, 3))
        if self.clouds:
            cover = self.clouds * _smoothstep(self.cloud_field[r0:r1], 0.0, 1.2)[..., None]
            sky = (1 - cover) * sky + cover * np.float32(238.0)
        return np.ascontiguousarray(sky, dtype=np.float32)

    def _haze(self, color: np.ndarray, depth: np.ndarray) -> np.ndarray:
        amount, distance = self.haze
        mix = (amount * (1.0 - np.exp(-depth / distance)))[..., None]  # h, 1, 1
        color *= 1 - mix
        color += mix * self.sky_horizon
        return color

    def _vegetation(self, r0: int, r1: int) -> np.ndarray:
        W = self.cam.width
        pyramid = self.tex['grass']
        texels = self.veg_scale / self.scale  # per pixel
        level = int(_mip_level(texels, len(pyramid)))
        (ou, ov), _ = self.offsets[HIGH_VEGETATION]
        u = np.broadcast_to(np.arange(W, dtype=np.float32)[None] * texels + ou, (r1 - r0, W))
        v = np.broadcast_to(np.arange(r0, r1, dtype=np.float32)[:, None] * texels * 0.8 + ov,
                            (r1 - r0, W))
        s = 0.5 ** level
        tex = _sample(pyramid[level], u * s, v * s)  # h, W
        color = self.colors[HIGH_VEGETATION] * (1.0 + 0.45 * tex[..., None])
        return self._haze(color, np.full((r1 - r0, 1), 60.0, np.float32))

    def _rocks(self, r0: int, r1: int, mask: np.ndarray) -> np.ndarray:
        W = self.cam.width
        pyramid = self.tex[self.rock_tex]
        texels = 1.6 / self.scale
        level = int(_mip_level(texels, len(pyramid)))
        (ou, ov), _ = self.offsets[OBSTACLE]
        u = np.broadcast_to(np.arange(W, dtype=np.float32)[None] * texels + ou, (r1 - r0, W))
        v = np.broadcast_to(np.arange(r0, r1, dtype=np.float32)[:, None] * texels + ov,
                            (r1 - r0, W))
        s = 0.5 ** level
        tex = _sample(pyramid[level], u * s, v * s)  # h, W
        # Light from above: brighter at the top of each column's rock span.
        rows = np.arange(r1 - r0, dtype=np.float32)[:, None]
        top = np.where(mask.any(axis=0), mask.argmax(axis=0), 0)[None, :]  # 1, W
        height = np.maximum(mask.sum(axis=0), 1)[None, :]
        shade = 1.2 - 0.55 * np.clip((rows - top) / height, 0.0, 1.0)  # h, W
        return self.colors[OBSTACLE] * (shade * (1.0 + 0.35 * tex))[..., None]

    def _ground(self, cls: int, r0: int, r1: int) -> np.ndarray:
        cam = self.cam
        depth = cam.depth[r0:r1]  # h, 1
        lateral = cam.lateral[r0:r1]  # h, W
        (ou, ov), angle = self.offsets[cls]
        cos, sin = math.cos(angle), math.sin(angle)
        shade = np.ones_like(lateral)
        for i, (name, per_metre, amplitude, aniso) in enumerate(self.ground_tex[cls]):
            pyramid = self.tex[name]
            u = (lateral * cos - depth * sin) * per_metre * aniso + ou * (i + 1)
            v = (lateral * sin + depth * cos) * per_metre + ov * (i + 1)
            levels = _mip_level(per_metre * depth[:, 0] / cam.focal * max(aniso, 1.0),
                                len(pyramid))  # h
            # distant texture fades as well as blurs
            fade = np.exp(-depth / 80.0)  # h, 1
            for level in np.unique(levels):
                found = np.nonzero(levels == level)[0]  # contiguous: depth falls with the row
                rows = slice(int(found[0]), int(found[-1]) + 1)
                s = 0.5 ** int(level)
                tex = _sample(pyramid[int(level)], u[rows] * s, v[rows] * s)
                shade[rows] += amplitude * fade[rows] * tex
        color = self.colors[cls] * shade[..., None]  # h, W, 3
        if cls == PUDDLE:  # a darker reflection of the sky towards the far edge
            color = color * np.float32(0.9)
        return self._haze(color, depth)


def render_scene(rng: np.random.Generator, height: int, width: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic off-road frame.

    A pure function of (rng state, height, width): the same generator state gives the same
    frame. Returns (image, labels): (H, W, 3) uint8 RGB and (H, W) uint8 training ids (0..7 of
    YCOR_CLASSES, 255 on thin unlabelled seams).
    """
    import cv2

    if height < 16 or width < 16:
        raise ValueError(f'scene size must be at least 16x16, got {width}x{height}')
    cam = _Camera.draw(rng, height, width)
    layout = _Layout(rng, cam)
    painter = _Painter(rng, cam)
    image = painter.paint(layout.labels)  # H, W, 3 float32
    gain = rng.uniform(0.8, 1.12) * rng.uniform(0.94, 1.06, 3).astype(np.float32)
    image *= gain
    image = cv2.GaussianBlur(image, (0, 0), 0.6)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(1, 3))
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    labels = layout.labels.copy()
    labels[_seams(rng, labels)] = IGNORE_INDEX
    return image, labels


def labels_to_palette_png(labels: np.ndarray) -> Image.Image:
    """A Pillow 'P' image with the raw YCOR palette (docs/MODEL.md §5.2) for (H, W) ids."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(_RAW_INDEX[labels]))  # 'L'
    # 9 colours padded to 256 entries, so Pillow writes an 8-bit PNG like the real files
    palette = [c for color in RAW_PALETTE for c in color]
    image.putpalette(palette + [0] * (768 - len(palette)))  # 'L' -> 'P'
    return image


def _split_indices(n: int, seed: int, valid_fraction: float) -> set[int]:
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f'valid_fraction must be in [0, 1), got {valid_fraction}')
    num_valid = int(round(n * valid_fraction))
    if valid_fraction > 0 and n >= 2:
        num_valid = min(max(num_valid, 1), n - 1)
    order = np.random.default_rng([seed, 1]).permutation(n)
    return {int(i) for i in order[:num_valid]}


def write_synthetic_ycor(out: Path, n: int, seed: int, height: int = 544, width: int = 1024,
                         valid_fraction: float = 0.2, progress: bool = True) -> Path:
    """Write `n` synthetic frames in the raw yamaha_v0 layout at the new directory `out`.

    `<out>/{train,valid}/iid%06d/{rgb.jpg,labels.png}`; iids run 0..n-1 across both splits
    (interleaved, as in the real data). Frame i is rendered from `default_rng([seed, 0, i])`, so
    the same seed gives identical files. Written atomically (temporary sibling, then rename).
    """
    import cv2
    from tqdm import tqdm

    if n < 1:
        raise ValueError(f'n must be >= 1, got {n}')
    out = Path(out)
    valid = _split_indices(n, seed, valid_fraction)
    with atomic_directory(out) as tmp:
        for i in tqdm(range(n), desc='synth', unit='img', disable=not progress):
            image, labels = render_scene(np.random.default_rng([seed, 0, i]), height, width)
            frame_dir = tmp / ('valid' if i in valid else 'train') / f'iid{i:06d}'
            frame_dir.mkdir(parents=True)
            ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError(f'JPEG encoding failed for frame {i}')
            (frame_dir / 'rgb.jpg').write_bytes(jpeg.tobytes())
            labels_to_palette_png(labels).save(frame_dir / 'labels.png', format='PNG')
    _logger.info('wrote %d synthetic frames (%d train, %d valid, %dx%d) to %s', n,
                 n - len(valid), len(valid), width, height, out)
    return out

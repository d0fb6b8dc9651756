"""Training and evaluation transforms, faithful to the seed's pipelines (docs/MODEL.md §6.2, §6.5).

numpy + OpenCV on RGB uint8 images and uint8 label maps. Training: discrete-ratio keep-ratio
resize, random crop (no re-draw), horizontal flip, PhotoMetricDistortion, normalisation, padding
to the crop. All randomness comes from an explicit `np.random.Generator`, so a sample is a pure
function of the generator's seed. Evaluation resizes with `contrast_semask_ros.preprocess`, the
code the robot runs, and leaves the labels at their original size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from contrast_semask_ros.preprocess import (
    SEED_TEST_SCALE,
    fit_to_scale,
    rescale_size,
    resize_image,
    resize_labels,
)
from contrast_semask_train.model.config import IMAGENET_MEAN, IMAGENET_STD

from .ycor import IGNORE_INDEX

SEED_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


class Sample(NamedTuple):
    image: np.ndarray   # 3, H, W float32, normalised
    labels: np.ndarray  # H, W int64 training ids, IGNORE_INDEX = ignore


def normalize(image: np.ndarray, mean: tuple[float, float, float] = IMAGENET_MEAN,
              std: tuple[float, float, float] = IMAGENET_STD) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 (x - mean) / std, per RGB channel."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'expected an (H, W, 3) image, got shape {image.shape}')
    mean_arr = np.asarray(mean, dtype=np.float32)
    inv_std = 1.0 / np.asarray(std, dtype=np.float32)
    out = (image.astype(np.float32) - mean_arr) * inv_std  # H, W, 3
    return np.ascontiguousarray(out.transpose(2, 0, 1))  # 3, H, W


def _convert(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """alpha * x + beta, clipped to [0, 255] and truncated to uint8 (as the seed does)."""
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PhotoMetricDistortion:
    """mmseg's PhotoMetricDistortion (docs/MODEL.md §6.2 step 6) on RGB uint8.

    Brightness; contrast first or last (a coin decides); saturation; hue in OpenCV's HSV
    (H in [0, 180)); each step applied with probability `prob` and clipped to [0, 255].
    The seed works on BGR; converting RGB with COLOR_RGB2HSV gives the same HSV, so the result
    is the same image in RGB order. No channel swap.
    """

    brightness_delta: int = 32
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18
    prob: float = 0.5

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W, 3) uint8 RGB."""
        import cv2

        if rng.random() < self.prob:
            delta = rng.uniform(-self.brightness_delta, self.brightness_delta)
            image = _convert(image, beta=delta)
        contrast_first = rng.integers(2) == 1
        if contrast_first:
            image = self._contrast(image, rng)
        if rng.random() < self.prob:
            hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
            hsv[..., 1] = _convert(hsv[..., 1], alpha=rng.uniform(*self.saturation_range))
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if rng.random() < self.prob:
            hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
            shift = int(rng.integers(-self.hue_delta, self.hue_delta))  # [-18, 17]
            hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 180).astype(np.uint8)
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if not contrast_first:
            image = self._contrast(image, rng)
        return image

    def _contrast(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < self.prob:
            return _convert(image, alpha=rng.uniform(*self.contrast_range))
        return image


@dataclass(frozen=True)
class TrainTransform:
    """The seed's training pipeline after loading (docs/MODEL.md §6.2 steps 3-8).

    Call with (image (H, W, 3) uint8 RGB, labels (H, W) uint8, rng); returns a Sample of
    (3, crop_h, crop_w) float32 and (crop_h, crop_w) int64.
    """

    random: ClassVar[bool] = True  # the dataset passes a per-(seed, epoch, index) generator

    scale: tuple[int, int] = SEED_TEST_SCALE  # (long, short) before the ratio
    ratios: tuple[float, ...] = SEED_RATIOS
    crop: int | tuple[int, int] = 512  # side, or (height, width)
    flip_prob: float = 0.5
    photometric: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if not self.ratios or min(self.ratios) <= 0:
            raise ValueError(f'ratios must be positive, got {self.ratios}')
        if min(self.crop_size) < 1:
            raise ValueError(f'crop must be positive, got {self.crop}')
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f'flip_prob must be in [0, 1], got {self.flip_prob}')

    @property
    def crop_size(self) -> tuple[int, int]:
        """(height, width)."""
        if isinstance(self.crop, int):
            return self.crop, self.crop
        return int(self.crop[0]), int(self.crop[1])

    def __call__(self, image: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> Sample:
        if image.shape[:2] != labels.shape[:2]:
            raise ValueError(f'image {image.shape[:2]} and labels {labels.shape[:2]} differ')
        # 3. keep-ratio resize to a discrete ratio of the scale
        ratio = self.ratios[int(rng.integers(len(self.ratios)))]
        target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        size = rescale_size(image.shape[1], image.shape[0], target)  # (width, height)
        image = resize_image(image, size)
        labels = resize_labels(labels, size)
        # 4. random crop, uniform offset, no re-draw
        crop_h, crop_w = self.crop_size
        top = int(rng.integers(max(image.shape[0] - crop_h, 0) + 1))
        left = int(rng.integers(max(image.shape[1] - crop_w, 0) + 1))
        image = image[top:top + crop_h, left:left + crop_w]
        labels = labels[top:top + crop_h, left:left + crop_w]
        # 5. horizontal flip
        if rng.random() < self.flip_prob:
            image, labels = image[:, ::-1], labels[:, ::-1]
        image = np.ascontiguousarray(image)
        # 6. photometric distortion on uint8
        if self.photometric:
            image = PhotoMetricDistortion()(image, rng)
        # 7-8. normalise, then pad bottom/right: image 0, labels ignore
        h, w = labels.shape
        out_image = np.zeros((3, crop_h, crop_w), dtype=np.float32)  # 3, crop_h, crop_w
        out_image[:, :h, :w] = normalize(image, self.mean, self.std)
        out_labels = np.full((crop_h, crop_w), IGNORE_INDEX, dtype=np.int64)
        out_labels[:h, :w] = labels
        return Sample(out_image, out_labels)


@dataclass(frozen=True)
class EvalTransform:
    """The seed's test pipeline (docs/MODEL.md §6.5) via the runtime's own preprocessing.

    Call with (image (H, W, 3) uint8 RGB, labels (H, W) uint8); returns a Sample of the
    keep-ratio resized, normalised image (3, h, w) and the labels untouched at (H, W) int64:
    metrics are computed at the original size after resizing the logits.
    """

    random: ClassVar[bool] = False

    scale: tuple[int, int] = SEED_TEST_SCALE
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, image: np.ndarray, labels: np.ndarray) -> Sample:
        if image.shape[:2] != labels.shape[:2]:
            raise ValueError(f'image {image.shape[:2]} and labels {labels.shape[:2]} differ')
        resized = fit_to_scale(image, self.scale)  # h, w, 3
        return Sample(normalize(resized, self.mean, self.std), labels.astype(np.int64))

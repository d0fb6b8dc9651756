"""Image preprocessing shared by evaluation, the node and replay (numpy + OpenCV, no torch).

The evaluation transform of the training package calls these very functions, so a model is
evaluated on exactly the pixels the robot feeds it. Normalisation (mean/std) is not done here:
the deployable graph takes uint8 RGB and normalises inside.
"""

from __future__ import annotations

import numpy as np

# The seed's test scale (docs/MODEL.md §6.5): fit the image into 2048 x 512 (long x short side),
# keeping the aspect ratio. A 1024x544 YCOR frame becomes 964x512.
SEED_TEST_SCALE = (2048, 512)


def rescale_size(width: int, height: int, scale: tuple[int, int] = SEED_TEST_SCALE
                 ) -> tuple[int, int]:
    """mmseg's keep-ratio rescale: the largest factor that fits (long, short) = `scale`.

    Returns (new_width, new_height), each rounded as int(x * factor + 0.5).
    """
    if width < 1 or height < 1:
        raise ValueError(f'image size must be positive, got {width}x{height}')
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(width, height), short_edge / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H, W, C) or (H, W) image to size = (width, height)."""
    import cv2  # lazy: keeps `import contrast_semask_ros.preprocess` cheap

    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_LINEAR)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) label or mask map to size = (width, height)."""
    import cv2

    if (labels.shape[1], labels.shape[0]) == tuple(size):
        return labels
    return cv2.resize(labels, tuple(size), interpolation=cv2.INTER_NEAREST)


def fit_to_scale(image: np.ndarray, scale: tuple[int, int] = SEED_TEST_SCALE) -> np.ndarray:
    """Keep-ratio bilinear resize of an (H, W, 3) uint8 RGB image to fit `scale`."""
    height, width = image.shape[:2]
    return resize_image(image, rescale_size(width, height, scale))

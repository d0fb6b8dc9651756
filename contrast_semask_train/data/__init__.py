"""Segmentation data: the YCOR format, tables and converter, synthetic scenes, transforms, the
Dataset.

Pipeline: raw yamaha_v0 (real archive, or `write_synthetic_ycor`) -> `convert_ycor` -> the
converted layout read by `SegmentationDataset` with a `TrainTransform` or `EvalTransform`.
The console script `contrast-semask-data` (`cli.main`) wraps the two writers.
"""

from .dataset import SegmentationDataset, read_image_rgb, read_labels
from .synth import labels_to_palette_png, render_scene, write_synthetic_ycor
from .transforms import (
    SEED_RATIOS,
    EvalTransform,
    PhotoMetricDistortion,
    Sample,
    TrainTransform,
    normalize,
)
from .ycor import (
    BACKGROUND_RGB,
    IGNORE_INDEX,
    MANIFEST_FORMAT,
    RAW_PALETTE,
    YCOR_ADE20K_SEEDS,
    YCOR_CLASSES,
    YCOR_COST_TABLE,
    YCOR_PALETTE,
    DataFormatError,
    class_seeds,
    colors_to_labels,
    convert_ycor,
    read_label_png,
    read_manifest,
)

__all__ = [
    'BACKGROUND_RGB', 'IGNORE_INDEX', 'MANIFEST_FORMAT', 'RAW_PALETTE', 'SEED_RATIOS',
    'YCOR_ADE20K_SEEDS', 'YCOR_CLASSES', 'YCOR_COST_TABLE', 'YCOR_PALETTE', 'DataFormatError',
    'EvalTransform', 'PhotoMetricDistortion', 'Sample', 'SegmentationDataset', 'TrainTransform',
    'class_seeds', 'colors_to_labels', 'convert_ycor',
    'labels_to_palette_png', 'normalize', 'read_image_rgb', 'read_label_png', 'read_labels',
    'read_manifest', 'render_scene', 'write_synthetic_ycor',
]

"""Segmentation data: the YCOR format, tables and converter, synthetic scenes, transforms, the
Dataset.

Pipeline: raw yamaha_v0 (real archive, or `write_synthetic_ycor`) -> `convert_ycor` -> the
converted layout read by `SegmentationDataset` with a `TrainTransform` or `EvalTransform`.
The console script `contrast-semask-data` (`cli.main`) wraps the two writers.

The names below are imported on first use (PEP 562), not with the package: `dataset` and
`transforms` need torch, while `synth`, `ycor` and `drive_bag` (the `drive-bag` command,
the `[replay]` extra) do not, and importing the package for them must not need torch.
"""

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    'BACKGROUND_RGB': 'ycor',
    'DataFormatError': 'ycor',
    'EvalTransform': 'transforms',
    'IGNORE_INDEX': 'ycor',
    'MANIFEST_FORMAT': 'ycor',
    'PhotoMetricDistortion': 'transforms',
    'RAW_PALETTE': 'ycor',
    'SEED_RATIOS': 'transforms',
    'Sample': 'transforms',
    'SegmentationDataset': 'dataset',
    'TrainTransform': 'transforms',
    'YCOR_ADE20K_SEEDS': 'ycor',
    'YCOR_CLASSES': 'ycor',
    'YCOR_COST_TABLE': 'ycor',
    'YCOR_PALETTE': 'ycor',
    'class_seeds': 'ycor',
    'colors_to_labels': 'ycor',
    'convert_ycor': 'ycor',
    'labels_to_palette_png': 'synth',
    'normalize': 'transforms',
    'read_image_rgb': 'dataset',
    'read_label_png': 'ycor',
    'read_labels': 'dataset',
    'read_manifest': 'ycor',
    'render_scene': 'synth',
    'write_synthetic_ycor': 'synth',
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'.{module}', __name__), name)
    globals()[name] = value  # later lookups do not come here again
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # the eager imports, for type checkers and IDEs
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

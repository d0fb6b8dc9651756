"""Contrastive SeMask-FPN in plain PyTorch (imports torch only).

Public API: `build_model`, `ModelConfig`, `ModelOutputs`; our checkpoints (`checkpoint.py`):
`save_checkpoint`, `load_checkpoint`, `read_checkpoint`; published SeMask/Swin checkpoints
(`published.py`): `load_semask_checkpoint`, `load_swin_imagenet_checkpoint`.
"""

from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .config import (
    ADE20K_SEMANTIC_ATTENTION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALIZATIONS,
    SEED_YCOR_MEAN,
    SEED_YCOR_STD,
    VARIANTS,
    ModelConfig,
    make_config,
    parse_semantic_attention,
    seed_semantic_attention,
)
from .deploy import INPUT_NAMES, DeployOutputs, DeployWrapper, propagate
from .layers import l2_normalize
from .published import (
    LoadReport,
    convert_semask_state_dict,
    convert_swin_imagenet_state_dict,
    load_semask_checkpoint,
    load_swin_imagenet_checkpoint,
)
from .segmentor import ContrastSemask, ModelOutputs, build_model, count_parameters

__all__ = [
    'ADE20K_SEMANTIC_ATTENTION', 'INPUT_NAMES', 'DeployOutputs', 'DeployWrapper', 'propagate',
    'IMAGENET_MEAN', 'IMAGENET_STD', 'NORMALIZATIONS',
    'SEED_YCOR_MEAN',
    'SEED_YCOR_STD', 'VARIANTS', 'CheckpointError', 'ContrastSemask', 'LoadReport',
    'ModelConfig', 'ModelOutputs', 'build_model', 'convert_semask_state_dict',
    'convert_swin_imagenet_state_dict', 'count_parameters', 'l2_normalize', 'load_checkpoint',
    'load_semask_checkpoint', 'load_swin_imagenet_checkpoint', 'make_config',
    'parse_semantic_attention', 'read_checkpoint', 'save_checkpoint', 'seed_semantic_attention',
]

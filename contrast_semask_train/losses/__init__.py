"""Training losses (docs/MODEL.md §3), torch only.

- `seg_cross_entropy`: CE with ignore and mmseg averaging (§3.1, §3.2);
- `PixelContrastiveLoss`: the seed's supervised pixel-contrastive bank loss (§3.3), not ReCo;
- `reco_loss`: the real ReCo loss, supervised mode (§3.5);
- `Criterion` / `LossConfig` / `LossTerms`: the weighted total (§3.4).
"""

from .ce import nearest_labels, seg_cross_entropy
from .contrastive import (
    SEED_YCOR_CLASS_WEIGHTS,
    PixelContrastConfig,
    PixelContrastiveLoss,
    pixel_contrast_from_samples,
)
from .criterion import Criterion, LossConfig, LossTerms
from .reco import RecoConfig, RecoSamples, reco_from_samples, reco_loss, sample_reco

__all__ = [
    'SEED_YCOR_CLASS_WEIGHTS', 'Criterion', 'LossConfig', 'LossTerms', 'PixelContrastConfig',
    'PixelContrastiveLoss', 'RecoConfig', 'RecoSamples', 'nearest_labels',
    'pixel_contrast_from_samples', 'reco_from_samples', 'reco_loss', 'sample_reco',
    'seg_cross_entropy',
]

"""Training losses (seed_spec §2), torch only.

- `seg_cross_entropy`: CE with ignore and mmseg averaging (§2.1, §2.2);
- `PixelContrastiveLoss`: the seed's supervised pixel-contrastive bank loss (§2.3), not ReCo;
- `reco_loss`: the real ReCo loss, supervised mode (§2.5);
- `Criterion` / `LossConfig` / `LossTerms`: the weighted total (§2.4).
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

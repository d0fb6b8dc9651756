"""Convert a published SeMask-FPN (mmseg) or ImageNet Swin checkpoint into a self-describing
contrast_semask checkpoint, printing what was loaded, re-initialised and ignored. The key
mapping is `model.published` (docs/MODEL.md §4); the optional class-row seeding table is YCOR's
(`data.ycor.YCOR_ADE20K_SEEDS`), passed in explicitly. The output is written atomically.

Example (the seed's starting point for YCOR, 8 classes, contrastive head):
    contrast-semask-convert semfpn_semask_small_ade20k.pth -o runs/init/ycor_small.pt \
        --variant small --num-classes 8 --head contrastive --seed-classes ycor
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from contrast_semask_ros.atomic import clean_stale
from contrast_semask_ros.engine_spec import file_sha256
from contrast_semask_ros.exit_codes import EXIT_OK, fail
from contrast_semask_train.data.ycor import CLASS_SEEDS, class_seeds
from contrast_semask_train.model import (
    NORMALIZATIONS,
    VARIANTS,
    CheckpointError,
    load_semask_checkpoint,
    load_swin_imagenet_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from contrast_semask_train.model.segmentor import build_configured_model

_logger = logging.getLogger('contrast-semask-convert')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='contrast-semask-convert', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', type=Path, help='mmseg SeMask-FPN or ImageNet Swin .pth')
    parser.add_argument('-o', '--output', type=Path, required=True,
                        help='where to write the contrast_semask checkpoint (.pt)')
    parser.add_argument('--source', choices=('semask', 'swin-imagenet'), default='semask',
                        help='checkpoint kind (default: semask)')
    parser.add_argument('--variant', choices=sorted(VARIANTS), default='small')
    parser.add_argument('--num-classes', type=int, default=8, help='classes of the new model')
    parser.add_argument('--head', choices=('contrastive', 'vanilla'), default='contrastive')
    parser.add_argument('--class-names', default='',
                        help='comma-separated class names of the new model (optional)')
    parser.add_argument('--semantic-attention', default='window',
                        help="per-stage semantic attention: 'window' (default; what the seed "
                             "uses on YCOR), 'ade20k' (global in stages 2-3, reproduces ADE20K "
                             "SeMask-T/S), 'seed' (the seed's hidden rule) or four entries")
    parser.add_argument('--seed-classes', choices=CLASS_SEEDS, default='none',
                        help="seed new class rows from ADE20K rows ('ycor': the 8 YCOR classes "
                             "from tree/grass/path+road/rock/sky/dirt track+earth/water/plant)")
    parser.add_argument('--normalization', choices=sorted(NORMALIZATIONS), default='imagenet',
                        help="input mean/std stored with the model ('seed-ycor' reproduces the "
                             "seed's per-image-mean std, docs/MODEL.md §6)")
    parser.add_argument('--trust-pickle', action='store_true',
                        help='allow full unpickling (mmcv meta objects); trusted files only')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    args = build_parser().parse_args(argv)
    names = tuple(n.strip() for n in args.class_names.split(',') if n.strip())
    try:
        model = build_configured_model(args.variant, args.num_classes, args.head,
                                       args.semantic_attention, args.normalization, names)
        raw = read_checkpoint(args.checkpoint, args.trust_pickle, trust_option='--trust-pickle')
        if args.source == 'semask':
            seeds = class_seeds(args.seed_classes, args.num_classes)
            report = load_semask_checkpoint(model, raw, class_seeds=seeds)
        else:
            report = load_swin_imagenet_checkpoint(model, raw)
        conversion = {'source': str(args.checkpoint), 'source_kind': args.source,
                      'source_sha256': file_sha256(args.checkpoint), **report._asdict()}
        clean_stale(args.output.parent, args.output.name)
        save_checkpoint(args.output, model, step=0, extra={'conversion': conversion})  # atomic
    except (CheckpointError, ValueError, OSError) as err:  # 2: bad input; 3: disk full
        return fail(_logger, err)
    _logger.info('%s', report.summary())
    _logger.info('wrote %s', args.output)
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())

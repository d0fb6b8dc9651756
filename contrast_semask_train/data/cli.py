"""`contrast-semask-data`: convert the YCOR archive and write synthetic data sets.

    contrast-semask-data convert-ycor ~/Downloads/yamaha_v0.zip data/ycor
    contrast-semask-data synth data/synth_raw --n 40 --seed 0
    contrast-semask-data convert-ycor data/synth_raw data/synth
"""

from __future__ import annotations

import argparse
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

from .synth import write_synthetic_ycor
from .ycor import DataFormatError, convert_ycor

_logger = logging.getLogger('contrast_semask_train.data.cli')

_DESCRIPTION = """\
Prepare segmentation data for contrast_semask training.

examples:
  # the real data set: the downloaded archive, or its unpacked yamaha_v0 directory
  contrast-semask-data convert-ycor yamaha_v0.zip data/ycor
  # a small synthetic stand-in, in the same raw layout, then the same conversion
  contrast-semask-data synth data/synth_raw --n 40 --seed 0
  contrast-semask-data convert-ycor data/synth_raw data/synth
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='contrast-semask-data', description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--no-progress', action='store_true', help='hide progress bars')
    parser.add_argument('-v', '--verbose', action='store_true', help='log debug messages')
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    convert = commands.add_parser(
        'convert-ycor', formatter_class=argparse.RawDescriptionHelpFormatter,
        help='convert a raw yamaha_v0 tree (directory or .zip) to the training layout',
        description='Convert raw YCOR (yamaha_v0/{train,valid}/iid*/{rgb.jpg,labels.png}) to\n'
                    '  OUT/images/{train,valid}/<iid>.jpg  (JPEG bytes copied)\n'
                    '  OUT/labels/{train,valid}/<iid>.png  (uint8 training ids, 255 = ignore)\n'
                    '  OUT/manifest.json\n'
                    'The source is never modified; OUT must not exist (or be empty).\n\n'
                    'example:\n  contrast-semask-data convert-ycor yamaha_v0.zip data/ycor')
    convert.add_argument('source', type=Path, help='yamaha_v0 directory or zip archive')
    convert.add_argument('out', type=Path, help='new output directory')
    convert.add_argument('--unknown-to-ignore', action='store_true',
                         help='map label colours outside the YCOR palette to ignore (255) '
                              'instead of failing; they are counted in the manifest')

    synth = commands.add_parser(
        'synth', formatter_class=argparse.RawDescriptionHelpFormatter,
        help='write synthetic off-road scenes in the raw yamaha_v0 layout',
        description='Render deterministic synthetic off-road frames (same seed, same files)\n'
                    'into OUT/{train,valid}/iid*/{rgb.jpg,labels.png}; convert them with\n'
                    'convert-ycor like the real archive.\n\n'
                    'example:\n  contrast-semask-data synth data/synth_raw --n 200 --seed 1 '
                    '--height 272 --width 512')
    synth.add_argument('out', type=Path, help='new output directory')
    synth.add_argument('--n', type=int, default=40, help='number of frames (default 40)')
    synth.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    synth.add_argument('--height', type=int, default=544, help='frame height (default 544)')
    synth.add_argument('--width', type=int, default=1024, help='frame width (default 1024)')
    synth.add_argument('--valid-fraction', type=float, default=0.2,
                       help='share of frames in valid/ (default 0.2)')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s')
    progress = not args.no_progress
    try:
        if args.command == 'convert-ycor':
            manifest = convert_ycor(args.source, args.out,
                                    unknown_to_ignore=args.unknown_to_ignore, progress=progress)
            counts = ', '.join(f'{split} {info["num_images"]}'
                               for split, info in manifest['splits'].items())
            _logger.info('converted %s -> %s (%s images)', args.source, args.out, counts)
        else:
            write_synthetic_ycor(args.out, n=args.n, seed=args.seed, height=args.height,
                                 width=args.width, valid_fraction=args.valid_fraction,
                                 progress=progress)
            _logger.info('next: contrast-semask-data convert-ycor %s <out>', args.out)
    except (DataFormatError, OSError, ValueError, zipfile.BadZipFile) as error:
        _logger.error('%s', error)
        return 2
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

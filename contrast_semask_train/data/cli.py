"""`contrast-semask-data`: convert the YCOR archive, write synthetic data sets and drive bags.

    contrast-semask-data convert-ycor ~/Downloads/yamaha_v0.zip data/ycor
    contrast-semask-data synth data/synth_raw --n 40 --seed 0
    contrast-semask-data convert-ycor data/synth_raw data/synth
    contrast-semask-data drive-bag bags/drive --frames 150 --size 272x512 --seed 1000
    contrast-semask-data drive-bag bags/scenes --mode patches --frames 80 --size 272x512
"""

from __future__ import annotations

import argparse
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .synth import write_synthetic_ycor
from .ycor import DataFormatError, convert_ycor

_logger = logging.getLogger('contrast_semask_train.data.cli')
DRIVE_BAG_MODES = ('sensors', 'patches')  # drive-bag --mode; the first is the default

_DESCRIPTION = """\
Prepare segmentation data for contrast_semask training.

examples:
  # the real data set: the downloaded archive, or its unpacked yamaha_v0 directory
  contrast-semask-data convert-ycor yamaha_v0.zip data/ycor
  # a small synthetic stand-in, in the same raw layout, then the same conversion
  contrast-semask-data synth data/synth_raw --n 40 --seed 0
  contrast-semask-data convert-ycor data/synth_raw data/synth
  # a simulated drive rosbag2 (camera, odometry, IMU, cmd_vel, tf, ground truth)
  contrast-semask-data drive-bag bags/drive --frames 150 --size 272x512 --seed 1000
  # independent synthetic scenes with delayed patch costs, for replay
  contrast-semask-data drive-bag bags/scenes --mode patches --frames 80 --size 272x512
"""


def _common_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument('--no-progress', action='store_true', default=default,
                        help='hide progress bars')
    parser.add_argument('-v', '--verbose', action='store_true', default=default,
                        help='log debug messages')


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'expected HEIGHTxWIDTH such as 272x512, got {text!r}') from None
    return height, width


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='contrast-semask-data', description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_options(parser, False)
    # the same options after the command; SUPPRESS: unless given there, the ones above stand
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    convert = commands.add_parser(
        'convert-ycor', parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help='convert a raw yamaha_v0 tree (directory or .zip) to the training layout',
        description='Convert raw YCOR (yamaha_v0/{train,valid}/iid*/{rgb.jpg,labels.png}) to\n'
                    '  OUT/images/{train,valid}/<iid>.jpg  (JPEG bytes copied)\n'
                    '  OUT/labels/{train,valid}/<iid>.png  (uint8 training ids, 255 = ignore)\n'
                    '  OUT/manifest.json\n'
                    'The source is never modified; OUT must not exist (or be empty).\n'
                    'Every image must decode completely: bad files are listed and refused\n'
                    '(exit 2) unless --skip-bad leaves those frames out.\n\n'
                    'example:\n  contrast-semask-data convert-ycor yamaha_v0.zip data/ycor')
    convert.add_argument('source', type=Path, help='yamaha_v0 directory or zip archive')
    convert.add_argument('out', type=Path, help='new output directory')
    convert.add_argument('--unknown-to-ignore', action='store_true',
                         help='map label colours outside the YCOR palette to ignore (255) '
                              'instead of failing; they are counted in the manifest')
    convert.add_argument('--skip-bad', action='store_true',
                         help='leave out frames whose rgb.jpg or labels.png does not decode '
                              'completely (truncated, damaged) instead of failing (exit 2); '
                              'they are listed in the log and the manifest\'s "skipped"')

    synth = commands.add_parser(
        'synth', parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
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
    _add_drive_bag(commands, common)
    return parser


def _add_drive_bag(commands: Any, common: argparse.ArgumentParser) -> None:
    from .drive_bag import DEFAULT_TOPICS, STORAGES, VERSIONS, DriveBagSpec
    from .drive_sim import DEFAULT_SIM_TOPICS, SimDriveSpec

    sim = SimDriveSpec()
    drive = commands.add_parser(
        'drive-bag', parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help='write a synthetic drive rosbag2 for replay: a simulated drive with raw sensors '
             '(default) or camera frames with patch costs',
        description='Write a rosbag2 directory OUT of a synthetic drive. Same seed, same bag.\n\n'
                    '--mode sensors (default): a robot driving over terrain regions of\n'
                    'different cost, with its raw sensors (the self-supervision source):\n'
                    f'  {DEFAULT_SIM_TOPICS.image}  sensor_msgs/msg/Image rgb8, --fps (or with\n'
                    f'    --compressed {DEFAULT_SIM_TOPICS.compressed_image}, jpeg)\n'
                    f'  {DEFAULT_SIM_TOPICS.camera_info}  sensor_msgs/msg/CameraInfo, with '
                    'every image\n'
                    f'  {DEFAULT_SIM_TOPICS.odom}  nav_msgs/msg/Odometry, 50 Hz\n'
                    f'  {DEFAULT_SIM_TOPICS.imu}  sensor_msgs/msg/Imu, 200 Hz\n'
                    f'  {DEFAULT_SIM_TOPICS.cmd_vel}  geometry_msgs/msg/TwistStamped, 20 Hz\n'
                    f'  {DEFAULT_SIM_TOPICS.tf_static}  base_link -> camera_link -> '
                    'camera_optical_frame\n'
                    f'  {DEFAULT_SIM_TOPICS.ground_truth}  32FC1 terrain cost per pixel\n'
                    f'  {DEFAULT_SIM_TOPICS.patch_cost}  32FC1 oracle mask: the cost under '
                    f'the\n    footprints of the next {sim.horizon_s:g} s within '
                    f'{sim.range_m:g} m, logged once the robot has driven them\n'
                    '  (contrast_semask_train/data/drive_sim.py describes the frames and '
                    'formulas)\n\n'
                    '--mode patches: independent synthetic scenes, one per frame:\n'
                    f'  {DEFAULT_TOPICS.image}  sensor_msgs/msg/Image rgb8 (or with\n'
                    f'    --compressed {DEFAULT_TOPICS.compressed_image}, jpeg)\n'
                    f'  {DEFAULT_TOPICS.patch_cost}  32FC1 cost under the robot footprint, '
                    'logged --patch-delay late\n'
                    f'  {DEFAULT_TOPICS.ground_truth}  32FC1 ground-truth cost\n'
                    'Replay either with contrast-semask-replay.\n\n'
                    'examples:\n  contrast-semask-data drive-bag bags/drive --frames 150 '
                    '--size 272x512 --seed 1000\n'
                    '  contrast-semask-data drive-bag bags/scenes --mode patches --frames 80 '
                    '--size 272x512 --seed 1000')
    defaults = DriveBagSpec()
    drive.add_argument('out', type=Path, help='new rosbag2 directory')
    drive.add_argument('--mode', choices=DRIVE_BAG_MODES, default=DRIVE_BAG_MODES[0],
                       help='sensors: a simulated drive with raw sensors; patches: independent '
                       'scenes with patch costs (default sensors)')
    drive.add_argument('--frames', type=int, default=defaults.frames,
                       help=f'number of camera frames (default {defaults.frames})')
    drive.add_argument('--size', type=_size, default=(defaults.height, defaults.width),
                       metavar='HxW', help='frame height x width in pixels '
                       f'(default {defaults.height}x{defaults.width})')
    drive.add_argument('--fps', type=float, default=defaults.fps,
                       help=f'camera rate in Hz (default {defaults.fps:g})')
    drive.add_argument('--patch-delay', type=float, default=None, metavar='SECONDS',
                       help='--mode patches: how much later than its frame a patch cost is '
                       f'logged (default {defaults.patch_delay_s:g})')
    drive.add_argument('--seed', type=int, default=defaults.seed,
                       help=f'scene seed (default {defaults.seed})')
    drive.add_argument('--storage', choices=STORAGES, default=defaults.storage,
                       help=f'rosbag2 storage plugin (default {defaults.storage})')
    drive.add_argument('--version', type=int, choices=VERSIONS, default=defaults.version,
                       help='rosbag2 metadata version: 9 for Jazzy and newer, 8 for older '
                       f'readers (Humble: also prefer sqlite3) (default {defaults.version})')
    drive.add_argument('--compressed', action='store_true',
                       help=f'write the camera as a jpeg CompressedImage on '
                       f'{DEFAULT_TOPICS.compressed_image} instead of rgb8 on '
                       f'{DEFAULT_TOPICS.image}')
    drive.add_argument('--overwrite', action='store_true',
                       help='replace an existing rosbag2 directory at OUT')


def _drive_bag(args: argparse.Namespace, progress: bool) -> None:
    if args.mode == 'sensors':
        if args.patch_delay is not None:
            raise ValueError('--patch-delay applies to --mode patches; the sensors mode logs '
                             'its oracle patch masks once the robot has driven over them')
        _sensor_drive_bag(args, progress)
    else:
        _patch_drive_bag(args, progress)


def _sensor_drive_bag(args: argparse.Namespace, progress: bool) -> None:
    from .drive_sim import SimDriveSpec, write_sim_drive

    height, width = args.size
    spec = SimDriveSpec(frames=args.frames, height=height, width=width, fps=args.fps,
                        seed=args.seed, storage=args.storage, version=args.version,
                        compressed=args.compressed)
    summary = write_sim_drive(args.out, spec, overwrite=args.overwrite,
                              progress=None if progress else False)
    _logger.info('wrote %s: a %.1f s simulated drive, %d frames of %dx%d (HxW) at %g Hz, '
                 '%d oracle patch masks, %s v%d, %.1f MB (%s)', summary.path,
                 summary.duration_s, summary.frames, height, width, spec.fps, summary.patches,
                 summary.storage, summary.version, summary.bytes / 1e6,
                 ', '.join(f'{topic} {count}' for topic, count in summary.messages.items()))


def _patch_drive_bag(args: argparse.Namespace, progress: bool) -> None:
    from .drive_bag import DriveBagSpec, write_drive_bag

    height, width = args.size
    delay = DriveBagSpec().patch_delay_s if args.patch_delay is None else args.patch_delay
    spec = DriveBagSpec(frames=args.frames, height=height, width=width, fps=args.fps,
                        patch_delay_s=delay, seed=args.seed, storage=args.storage,
                        version=args.version, compressed=args.compressed)
    summary = write_drive_bag(args.out, spec, overwrite=args.overwrite,
                              progress=None if progress else False)
    _logger.info('wrote %s: %d frames of %dx%d (HxW) at %g Hz, %d patch costs %g s late, %s v%d, '
                 '%.1f MB (%s)', summary.path, summary.frames, height, width, spec.fps,
                 summary.patches, spec.patch_delay_s, summary.storage, summary.version,
                 summary.bytes / 1e6, ', '.join(summary.topics))


def _convert_ycor(args: argparse.Namespace, progress: bool) -> int:
    """Exit codes (README, "Exit codes"): 0 converted, 2 bad source/output or undecodable
    images, 3 disk full or a missing package; every error is one line."""
    from contrast_semask_ros.exit_codes import EXIT_OK, fail

    try:
        manifest = convert_ycor(args.source, args.out, unknown_to_ignore=args.unknown_to_ignore,
                                progress=progress, skip_bad=args.skip_bad)
    except (DataFormatError, ImportError, OSError, ValueError, zipfile.BadZipFile) as error:
        return fail(_logger, error)
    counts = ', '.join(f'{split} {info["num_images"]}'
                       for split, info in manifest['splits'].items())
    skipped = f'; {len(manifest["skipped"])} bad frame(s) left out' if manifest.get(
        'skipped') else ''
    _logger.info('converted %s -> %s (%s images%s)', args.source, args.out, counts, skipped)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s')
    progress = not args.no_progress
    if args.command == 'convert-ycor':
        return _convert_ycor(args, progress)
    try:
        if args.command == 'drive-bag':
            _drive_bag(args, progress)
        else:
            write_synthetic_ycor(args.out, n=args.n, seed=args.seed, height=args.height,
                                 width=args.width, valid_fraction=args.valid_fraction,
                                 progress=progress)
            _logger.info('next: contrast-semask-data convert-ycor %s <out>', args.out)
    except (DataFormatError, ImportError, OSError, ValueError, zipfile.BadZipFile) as error:
        _logger.error('%s', error)
        return 2
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

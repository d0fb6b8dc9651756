"""The cost map's parameters: one table for the node, replay, the benchmarks and the README.

    values = resolve(read_params_file('config/cost_map.yaml'), {'temperature': 0.05})
    config = PipelineConfig.from_values(values)      # the pipeline's settings, validated

Each `Param` has a name, a type, a default, an allowed range or set of choices and a
description. The node declares exactly these ROS parameters (read-only unless `runtime`);
replay offers every `scope in ('model', 'pipeline', 'render')` one as a CLI option and reads
the node's own parameter file with `--params`, so a replay runs with the robot's settings. A test
checks the README's parameter table against this one. ROS-free.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple


class ConfigError(ValueError):
    """A setting out of range or not matching the model; says what is allowed."""


class Param(NamedTuple):
    name: str
    type: type  # str, int, float, bool, or list (of `length` floats; 2: a [low, high] range)
    default: Any
    description: str
    scope: str  # 'model' (opening it), 'pipeline', 'render', 'world', 'ros' (node only)
    low: float | None = None  # inclusive bounds, None = unbounded
    high: float | None = None
    choices: tuple[str, ...] = ()
    runtime: bool = False  # may change while running (ros2 param set)
    low_open: bool = False  # the low bound itself is excluded
    length: int = 2  # list parameters: how many numbers (2: a [low, high] range)


PARAMS: tuple[Param, ...] = (
    Param('model_path', str, '', 'TensorRT .engine, ONNX .onnx (each with its .json '
          'EngineSpec) or checkpoint .pt', 'model'),
    Param('backend', str, 'auto', 'auto (by extension), tensorrt, onnxruntime or torch', 'model',
          choices=('auto', 'tensorrt', 'onnxruntime', 'torch')),
    Param('device', str, 'auto', 'PyTorch backend: auto, cuda or cpu', 'model',
          choices=('auto', 'cuda', 'cpu')),
    Param('precision', str, 'auto', 'PyTorch backend: auto (fp16 on CUDA), fp32, fp16 or bf16',
          'model', choices=('auto', 'fp32', 'fp16', 'bf16')),
    Param('input_height', int, 0, 'engine input height; 0 = from the EngineSpec (required for '
          '.pt)', 'model', low=0),
    Param('input_width', int, 0, 'engine input width; 0 = from the EngineSpec (required for '
          '.pt)', 'model', low=0),
    Param('temperature', float, 0.1, 'propagation temperature (cosine units), [0.005, 10]',
          'pipeline', low=0.005, high=10.0, runtime=True),
    Param('min_confidence', float, 0.5, 'cost is NaN (unknown) where the best similarity to '
          'the bank is below this, [-1, 1]', 'pipeline', low=-1.0, high=1.0, runtime=True),
    Param('bank_size', int, 0, "prototypes kept; 0 = the engine's Kmax (its bank size)",
          'pipeline', low=0),
    Param('min_patch_pixels', int, 16, 'smallest patch region, in stride-4 cells', 'pipeline',
          low=1),
    Param('merge_similarity', float, 0.98, 'merge a new prototype into one at least this '
          'similar; 0 = never', 'pipeline', low=0.0, high=1.0),
    Param('eviction', str, 'oldest', 'bank eviction when full: oldest or least_used',
          'pipeline', choices=('oldest', 'least_used')),
    Param('buffer_frames', int, 30, 'past frames kept for patch costs that arrive later',
          'pipeline', low=1),
    Param('buffer_age_s', float, 10.0, 'and for at most this many seconds', 'pipeline',
          low=0.0, low_open=True),
    Param('buffer_dtype', str, 'float16', 'buffered embeddings as float16 (half the memory) or '
          'float32', 'pipeline', choices=('float16', 'float32')),
    Param('keyframe_distance_m', float, 0.0, 'buffer a frame only when the base moved this far '
          '(odom) since the last buffered one; 0 = every frame, [0, 100]', 'pipeline', low=0.0,
          high=100.0),
    Param('keyframe_period_s', float, 0.0, 'without odometry, or with keyframe_distance_m 0: '
          'buffer a frame this long after the last one; 0 = no time rule, [0, 60]', 'pipeline',
          low=0.0, high=60.0),
    Param('stamp_tolerance_s', float, 0.0, 'a patch matches the nearest frame within this; '
          '0 = exact', 'pipeline', low=0.0),
    Param('cost_range', list, [0.0, 1.0], 'measured costs outside [low, high] (after the cast '
          'to float32) are refused and counted; also checked in bank files', 'pipeline'),
    Param('max_image_pixels', int, 25_000_000, 'camera frames of more pixels (width x height, '
          'from the header before decoding) are refused and counted; 0 = no limit', 'model',
          low=0),
    Param('image_transport', str, 'raw', 'raw (sensor_msgs/Image) or compressed '
          '(CompressedImage)', 'ros', choices=('raw', 'compressed')),
    Param('publish_embedding', bool, True, 'publish the 32FC<D> embedding image', 'ros'),
    Param('publish_confidence', bool, True, 'publish the confidence image', 'ros'),
    Param('overlay_max_cost', float, 1.0, 'cost shown red in cost_overlay, [1e-06, 1e+06]',
          'render', low=1e-6, high=1e6, runtime=True),
    Param('image_qos_depth', int, 1, 'image subscription depth (keep small: stale frames drop)',
          'ros', low=1),
    Param('image_reliability', str, 'best_effort', 'image subscription: best_effort or '
          'reliable', 'ros', choices=('best_effort', 'reliable')),
    Param('patch_qos_depth', int, 10, 'patch_cost subscription depth (reliable)', 'ros', low=1),
    Param('output_qos_depth', int, 1, 'output publishers depth', 'ros', low=1),
    Param('output_reliability', str, 'reliable', 'output publishers: reliable or best_effort',
          'ros', choices=('reliable', 'best_effort')),
    Param('bank_load_path', str, '', 'bank .npz preloaded at start and read by ~/load_bank',
          'ros'),
    Param('bank_save_path', str, 'prototype_bank.npz', 'where ~/save_bank writes', 'ros'),
    Param('diagnostics_period_s', float, 1.0, 'period of /diagnostics; 0 = none', 'ros',
          low=0.0),
    # the world outputs, cost_cloud and cost_grid (world/; the node's world_node.py)
    Param('cloud_frame', str, 'optical', "cost_cloud's frame: optical (the image's frame_id), "
          'base (base_frame) or odom (grid_frame; needs odometry)', 'world',
          choices=('optical', 'base', 'odom')),
    Param('cloud_stride', int, 4, 'cost_cloud and cost_grid sample every cloud_stride-th pixel '
          'row and column, [1, 64]', 'world', low=1, high=64),
    Param('cloud_max_range_m', float, 20.0, 'points farther from the camera are dropped (m), '
          '(0, 1000]', 'world', low=0.0, high=1000.0, low_open=True),
    Param('cloud_keep_unknown', bool, False, 'cost_cloud keeps unknown-cost points (cost NaN; '
          'is_dense false)', 'world'),
    Param('ground_offset', float, 0.0, 'ground plane height in the base frame (m), [-10, 10]',
          'world', low=-10.0, high=10.0),
    Param('grid_frame', str, 'odom', "cost_grid's frame_id (and cost_cloud's in odom): the "
          "odometry's header.frame_id (REP 105)", 'world'),
    Param('grid_size_m', float, 20.0, 'side of the square cost_grid around the robot (m), a '
          'whole number of cells, (0, 1000]', 'world', low=0.0, high=1000.0, low_open=True),
    Param('grid_resolution_m', float, 0.1, 'cost_grid cell side (m), [0.01, 10]', 'world',
          low=0.01, high=10.0),
    Param('grid_decay_s', float, 10.0, 'a cell not observed for this long is unknown again '
          '(s), (0, 3600]', 'world', low=0.0, high=3600.0, low_open=True),
    Param('grid_tau_s', float, 1.0, "time constant of the decay of a cell's older evidence "
          '(s), (0, 3600]', 'world', low=0.0, high=3600.0, low_open=True),
    Param('grid_range_scale_m', float, 5.0, 'an observation weighs confidence / (1 + (range / '
          'grid_range_scale_m)^2) (m), (0, 1000]', 'world', low=0.0, high=1000.0,
          low_open=True),
    Param('grid_rate_hz', float, 2.0, 'cost_grid publish rate in sensor time; 0 = after every '
          'frame, [0, 100]', 'ros', low=0.0, high=100.0),
    Param('grid_max_cost', float, 1.0, 'cost shown as 100 in cost_grid, [1e-06, 1e+06]',
          'world', low=1e-6, high=1e6),
    Param('publish_grid', bool, False, 'fuse and publish cost_grid without subscribers too '
          '(else only while subscribed)', 'ros'),
    Param('camera_pose', list, [], 'camera body frame (camera_link) in base_frame: x, y, z (m), '
          'roll, pitch, yaw (rad); empty = from TF', 'ros', length=6),
    Param('base_frame', str, 'base_link', 'robot base frame (TF extrinsics, cloud_frame base)',
          'ros'),
    Param('use_depth', bool, False, "subscribe depth (aligned 16UC1 or 32FC1) and "
          'depth/camera_info: cost_cloud uses the depth image of the frame (same stamp, else '
          'the latest within 0.1 s)', 'ros'),
    Param('grid_pose_source', str, 'odom', "the base pose at each frame's stamp: odom (the odom "
          'topic, interpolated) or tf (TF grid_frame <- base_frame at the stamp, waiting up to '
          '50 ms; needs tf2_ros)', 'ros', choices=('odom', 'tf')),
)


class ParamTable:
    """A node's parameters: check, resolve, parameter files and CLI options against one table.

    The cost map's table is PARAMS (module functions below); the patch_cost node has its own
    (supervision/params.py)."""

    def __init__(self, params: tuple[Param, ...], node_name: str) -> None:
        self.params = params
        self.node_name = node_name
        self.by_name: dict[str, Param] = {p.name: p for p in params}
        self.defaults: dict[str, Any] = {p.name: p.default for p in params}

    def check(self, name: str, value: Any) -> Any:
        """`value` converted to the parameter's type and checked; raises ConfigError."""
        param = self.by_name.get(name)
        if param is None:
            raise ConfigError(f'unknown parameter {name!r}; known: {", ".join(self.by_name)}')
        return check_value(param, value)

    def resolve(self, *layers: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults, then each layer in order (later wins), every value checked."""
        values = {name: self.check(name, value) for name, value in self.defaults.items()}
        for layer in layers:
            for name, value in layer.items():
                values[name] = self.check(name, value)
        return values

    def read_params_file(self, path: str | os.PathLike, node_name: str | None = None
                         ) -> dict[str, Any]:
        """The `ros__parameters` of a ROS 2 parameter file (keyed `/**:` or by node name)."""
        import yaml  # lazy: only replay and the benchmarks read parameter files

        node_name = node_name or self.node_name
        path = Path(path)
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f'cannot read parameter file {path}: {err}') from err
        if not isinstance(document, dict):
            raise ConfigError(f'{path} is not a ROS 2 parameter file (expected a mapping like '
                              "'/**: {ros__parameters: {...}}')")
        values: dict[str, Any] = {}
        for key in ('/**', node_name, f'/{node_name}'):  # later, more specific keys win
            section = document.get(key)
            if isinstance(section, dict) and isinstance(section.get('ros__parameters'), dict):
                values.update(section['ros__parameters'])
        if not values:
            raise ConfigError(f"{path} has no ros__parameters under '/**' or {node_name!r}; "
                              f'keys: {", ".join(map(str, document))}')
        unknown = sorted(set(values) - set(self.by_name))
        if unknown:
            raise ConfigError(f'{path}: unknown parameter(s) {", ".join(unknown)}; known: '
                              f'{", ".join(self.by_name)}')
        return values

    def add_cli_options(self, parser: argparse.ArgumentParser, scopes: Iterable[str],
                        skip: Iterable[str] = ()) -> None:
        """One `--name-with-dashes` option per parameter of `scopes` (but those named in
        `skip`); unset options stay None."""
        scopes, skip = tuple(scopes), set(skip)
        for param in self.params:
            if param.scope not in scopes or param.name in skip:
                continue
            flag = '--' + param.name.replace('_', '-')
            if param.type is list:
                metavar = ('LOW', 'HIGH') if param.length == 2 else 'X'
                parser.add_argument(flag, dest=param.name, type=float, nargs=param.length,
                                    default=None, metavar=metavar,
                                    help=f'{param.description} (default {param.default!r})')
                continue
            kind: Any = _parse_bool if param.type is bool else param.type
            parser.add_argument(flag, dest=param.name, type=kind, default=None,
                                choices=param.choices or None, metavar=None if param.choices
                                else param.type.__name__.upper(),
                                help=f'{param.description} (default {param.default!r})')

    def cli_values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The parameter options that were given on the command line."""
        return {p.name: getattr(args, p.name) for p in self.params
                if getattr(args, p.name, None) is not None}


def check_value(param: Param, value: Any) -> Any:
    """`value` converted to `param`'s type and checked against its range; ConfigError."""
    name = param.name
    if param.type is list:
        return _check_list(param, value)
    try:
        if param.type is bool:
            if not isinstance(value, bool):
                raise TypeError
            converted: Any = value
        elif param.type is int:
            if isinstance(value, bool) or int(value) != value:
                raise TypeError
            converted = int(value)
        elif param.type is float:
            if isinstance(value, bool):
                raise TypeError
            converted = float(value)
        else:
            converted = str(value)
    except (TypeError, ValueError):
        kind = {bool: 'true or false', int: 'an integer', float: 'a number'}.get(param.type,
                                                                                'a string')
        raise ConfigError(f'{name} must be {kind}, got {value!r}') from None
    if param.choices and converted not in param.choices:
        raise ConfigError(f'{name} must be one of {", ".join(param.choices)}, got {value!r}')
    if param.type in (int, float):
        if isinstance(converted, float) and not math.isfinite(converted):
            raise ConfigError(f'{name} must be a finite number, got {value!r}')
        low_ok = (param.low is None or converted > param.low if param.low_open
                  else param.low is None or converted >= param.low)
        high_ok = param.high is None or converted <= param.high
        if not (low_ok and high_ok):
            raise ConfigError(f'{name} must be in {_range_text(param)}, got {value!r}')
    return converted


def _check_list(param: Param, value: Any) -> tuple[float, ...]:
    """`param.length` finite numbers; a [low, high] pair (length 2) needs low < high. A
    parameter whose default is empty may be empty (unset)."""
    try:
        if isinstance(value, (str, bytes)):
            raise ValueError
        numbers = tuple(float(v) for v in value)
        if not numbers and len(param.default) == 0:
            return ()
        if len(numbers) != param.length or not all(math.isfinite(v) for v in numbers):
            raise ValueError
        if param.length == 2 and not numbers[0] < numbers[1]:
            raise ValueError
    except (TypeError, ValueError):
        what = ('[low, high], two finite numbers with low < high' if param.length == 2
                else f'a list of {param.length} finite numbers')
        raise ConfigError(f'{param.name} must be {what}, got {value!r}') from None
    return numbers


def _range_text(param: Param) -> str:
    low = '-inf' if param.low is None else f'{param.low:g}'
    high = 'inf' if param.high is None else f'{param.high:g}'
    return f"{'(' if param.low_open or param.low is None else '['}{low}, {high}]"


# the 'world' parameters that are not WorldConfig fields under their own name (world/)
_WORLD_FIELDS = {'grid_max_cost': 'max_cost', 'grid_frame': None}


def world_config_kwargs(values: Mapping[str, Any]) -> dict[str, Any]:
    """world.projector.WorldConfig's keyword arguments from a resolved parameter dict: every
    'world' parameter but grid_frame (WorldProjector's own argument)."""
    return {_WORLD_FIELDS.get(p.name, p.name): values[p.name] for p in PARAMS
            if p.scope == 'world' and _WORLD_FIELDS.get(p.name, p.name)}


TABLE = ParamTable(PARAMS, 'cost_map')
BY_NAME: dict[str, Param] = TABLE.by_name
DEFAULTS: dict[str, Any] = TABLE.defaults
check = TABLE.check
resolve = TABLE.resolve
read_params_file = TABLE.read_params_file
add_cli_options = TABLE.add_cli_options
cli_values = TABLE.cli_values


def _parse_bool(text: str) -> bool:
    if text.lower() in ('true', '1', 'yes'):
        return True
    if text.lower() in ('false', '0', 'no'):
        return False
    raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')


@dataclass(frozen=True)
class PipelineConfig:
    """The pipeline's settings (the `pipeline` scope of PARAMS; defaults from the table)."""

    temperature: float = DEFAULTS['temperature']
    min_confidence: float = DEFAULTS['min_confidence']
    bank_size: int = DEFAULTS['bank_size']
    min_patch_pixels: int = DEFAULTS['min_patch_pixels']
    merge_similarity: float = DEFAULTS['merge_similarity']
    eviction: str = DEFAULTS['eviction']
    buffer_frames: int = DEFAULTS['buffer_frames']
    buffer_age_s: float = DEFAULTS['buffer_age_s']
    buffer_dtype: str = DEFAULTS['buffer_dtype']
    keyframe_distance_m: float = DEFAULTS['keyframe_distance_m']
    keyframe_period_s: float = DEFAULTS['keyframe_period_s']
    stamp_tolerance_s: float = DEFAULTS['stamp_tolerance_s']
    cost_range: tuple[float, float] = tuple(DEFAULTS['cost_range'])

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> PipelineConfig:
        """The pipeline settings out of a full parameter dict (other keys ignored)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def validate(self, max_bank_size: int | None = None) -> PipelineConfig:
        """Check every setting against the table (and bank_size against the engine's Kmax);
        returns self with bank_size 0 replaced by the engine's Kmax."""
        checked = {f.name: check(f.name, getattr(self, f.name)) for f in fields(self)}
        if checked['keyframe_period_s'] >= checked['buffer_age_s']:
            raise ConfigError(
                f"keyframe_period_s={checked['keyframe_period_s']:g} is not shorter than "
                f"buffer_age_s={checked['buffer_age_s']:g}: the buffer would hold at most one "
                'frame; set keyframe_period_s well under buffer_age_s (0 = no time rule)')
        bank_size = checked['bank_size']
        if max_bank_size is not None:
            if bank_size == 0:
                bank_size = max_bank_size
            elif bank_size > max_bank_size:
                raise ConfigError(
                    f'bank_size={bank_size} but the model was exported with bank size (Kmax) '
                    f'{max_bank_size}: set bank_size to 0 (= Kmax) or at most {max_bank_size}, '
                    'or export the model with a larger --bank-size')
        elif bank_size == 0:
            raise ConfigError('bank_size 0 means "the engine\'s Kmax": validate with the engine')
        validated = PipelineConfig(**{**checked, 'bank_size': bank_size})  # check() converted
        return self if validated == self else validated

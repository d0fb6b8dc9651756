"""The one parameter table (contrast_semask_ros/params.py): checks, layering, parameter files,
and the README's parameter table, which must say exactly what the table says."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import pytest

from contrast_semask_ros import params
from contrast_semask_ros.params import PARAMS, ConfigError, PipelineConfig

REPO = Path(__file__).resolve().parents[1]


def _readme_rows() -> dict[str, tuple[str, str, str]]:
    """name -> (default, run time, meaning) from the README's parameter table."""
    rows = {}
    for line in (REPO / 'README.md').read_text().splitlines():
        match = re.fullmatch(r'\| `(\w+)` \| `([^`]*)` \| (yes)? ?\| (.*) \|', line)
        if match and match.group(1) in params.BY_NAME:
            rows[match.group(1)] = (match.group(2), match.group(3) or '', match.group(4))
    return rows


def _readme_default(param: params.Param) -> str:
    if param.type is bool:
        return 'true' if param.default else 'false'
    if param.type is str:
        return param.default if param.default else "''"
    if param.type is list:
        return repr(param.default)
    return repr(param.default)


def test_readme_table_matches_the_parameter_table() -> None:
    rows = _readme_rows()
    assert list(rows) == [p.name for p in PARAMS], 'README rows and params.PARAMS differ'
    for p in PARAMS:
        default, runtime, meaning = rows[p.name]
        assert default == _readme_default(p), p.name
        assert runtime == ('yes' if p.runtime else ''), p.name
        assert meaning == p.description.replace('<', '&lt;').replace('>', '&gt;'), p.name


def test_pipeline_config_defaults_come_from_the_table() -> None:
    config = PipelineConfig()
    for name in PipelineConfig.__dataclass_fields__:
        assert getattr(config, name) == params.check(name, params.DEFAULTS[name]), name
        assert params.BY_NAME[name].scope == 'pipeline'


@pytest.mark.parametrize(('name', 'value', 'message'), [
    ('temperature', 0.0, r'temperature must be in \[0.005, 10\]'),
    ('temperature', 1e-300, r'temperature must be in \[0.005, 10\]'),  # float32 0
    ('overlay_max_cost', math.inf, 'finite'),
    ('overlay_max_cost', 1e-320, r'\[1e-06, 1e\+06\]'),
    ('cost_range', [1.0, 0.0], 'low < high'),
    ('cost_range', [0.0, math.inf], 'two finite numbers'),
    ('cost_range', 0.5, r'\[low, high\]'),
    ('max_image_pixels', -1, 'max_image_pixels must be in'),
    ('temperature', math.nan, 'finite'),
    ('min_confidence', 1.5, r'\[-1, 1\]'),
    ('bank_size', -1, 'bank_size must be in'),
    ('bank_size', 2.5, 'bank_size must be an integer'),
    ('eviction', 'random', 'one of oldest, least_used'),
    ('publish_embedding', 'yes', 'must be true or false'),
    ('buffer_age_s', 0.0, r'buffer_age_s must be in \(0'),
    ('buffer_dtype', 'float64', 'buffer_dtype must be one of float16, float32'),
    ('keyframe_distance_m', -0.1, r'keyframe_distance_m must be in \[0, 100\]'),
    ('keyframe_distance_m', 101.0, r'keyframe_distance_m must be in \[0, 100\]'),
    ('keyframe_distance_m', math.nan, 'finite'),
    ('keyframe_period_s', -1.0, r'keyframe_period_s must be in \[0, 60\]'),
    ('keyframe_period_s', 61.0, r'keyframe_period_s must be in \[0, 60\]'),
    ('no_such_thing', 1, 'unknown parameter'),
])
def test_check_names_the_allowed_values(name: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        params.check(name, value)


def test_resolve_layers_later_wins_and_converts() -> None:
    values = params.resolve({'temperature': 0.2, 'bank_size': 8}, {'temperature': 1})
    assert values['temperature'] == 1.0 and isinstance(values['temperature'], float)
    assert values['bank_size'] == 8 and values['eviction'] == 'oldest'


def test_bank_size_zero_means_the_engines_kmax() -> None:
    assert PipelineConfig().bank_size == 0
    assert PipelineConfig().validate(max_bank_size=64).bank_size == 64
    assert PipelineConfig(bank_size=16).validate(max_bank_size=64).bank_size == 16
    with pytest.raises(ConfigError, match=r'bank_size=65 .*\(Kmax\) 64.*set bank_size to 0'):
        PipelineConfig(bank_size=65).validate(max_bank_size=64)


def test_reads_the_nodes_own_parameter_file(tmp_path: Path) -> None:
    values = params.read_params_file(REPO / 'config' / 'cost_map.yaml')
    assert set(values) == {p.name for p in PARAMS} - {'model_path'}
    assert params.resolve(values) == params.resolve({})  # the file holds the defaults
    named = tmp_path / 'named.yaml'
    named.write_text('/**:\n  ros__parameters:\n    temperature: 0.3\n'
                     'cost_map:\n  ros__parameters:\n    temperature: 0.05\n')
    assert params.read_params_file(named) == {'temperature': 0.05}  # the node's own key wins
    bad = tmp_path / 'bad.yaml'
    bad.write_text('/**:\n  ros__parameters:\n    temprature: 0.3\n')
    with pytest.raises(ConfigError, match='unknown parameter.*temprature'):
        params.read_params_file(bad)
    with pytest.raises(ConfigError, match='cannot read'):
        params.read_params_file(tmp_path / 'missing.yaml')


def test_cli_options_cover_every_pipeline_and_model_setting() -> None:
    parser = argparse.ArgumentParser()
    params.add_cli_options(parser, ('model', 'pipeline', 'render'))
    args = parser.parse_args(['--temperature', '0.05', '--bank-size', '16',
                              '--eviction', 'least_used'])
    assert params.cli_values(args) == {'temperature': 0.05, 'bank_size': 16,
                                       'eviction': 'least_used'}
    flags = {a.dest for a in parser._actions}
    assert {p.name for p in PARAMS if p.scope in ('model', 'pipeline', 'render')} <= flags


def test_keyframe_and_storage_parameters_are_pipeline_settings_in_the_readme() -> None:
    rows = _readme_rows()
    assert rows['buffer_dtype'][0] == 'float16'
    assert rows['keyframe_distance_m'][0] == rows['keyframe_period_s'][0] == '0.0'
    config = PipelineConfig()  # today's behaviour: every frame kept, stored in float16
    assert (config.buffer_dtype, config.keyframe_distance_m, config.keyframe_period_s) == (
        'float16', 0.0, 0.0)
    config = PipelineConfig.from_values(params.resolve({'keyframe_distance_m': 0.2,
                                                        'keyframe_period_s': 0.5,
                                                        'buffer_dtype': 'float32'}))
    assert config.validate(32) == PipelineConfig(bank_size=32, keyframe_distance_m=0.2,
                                                 keyframe_period_s=0.5, buffer_dtype='float32')


def test_keyframe_period_must_be_shorter_than_the_buffer_age() -> None:
    with pytest.raises(ConfigError, match=r'keyframe_period_s=10 is not shorter than '
                       r'buffer_age_s=10: .*set keyframe_period_s well under buffer_age_s'):
        PipelineConfig(keyframe_period_s=10.0).validate(32)
    assert PipelineConfig(keyframe_period_s=9.0).validate(32).keyframe_period_s == 9.0


def test_readme_patch_cost_table_matches_its_parameter_table() -> None:
    """The patch_cost node's README table (three columns, after '### Self-supervision')
    against supervision/params.py."""
    from contrast_semask_ros.supervision.params import PARAMS as SUPERVISION

    text = (REPO / 'README.md').read_text()
    section = text[text.index('### Self-supervision'):]
    rows = {}
    for line in section.splitlines():
        match = re.fullmatch(r'\| `(\w+)` \| `([^`]*)` \| ([^|]*) \|', line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    assert list(rows) == [p.name for p in SUPERVISION]
    for p in SUPERVISION:
        assert rows[p.name] == (_readme_default(p), p.description), p.name

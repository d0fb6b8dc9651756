"""contrast-semask-replay takes the node's settings: every model/pipeline/render parameter is an
option, `--params` reads the node's own parameter file, options override the file, and the
report records what it ran with; bad settings are one clear line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import TextureModel

from contrast_semask_ros import params
from contrast_semask_ros.replay import SCOPES, build_parser
from contrast_semask_ros.replay import main as replay_main

REPO = Path(__file__).resolve().parents[1]
TOPICS = ['--image-topic', '/camera/image_raw', '--patch-cost-topic', '/traversal/patch_cost']


@pytest.fixture(scope='module')
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip('rosbags', reason='replay reads bags with rosbags (requirements/dev.txt)')
    from contrast_semask_train.data.cli import main as data_main

    path = tmp_path_factory.mktemp('params') / 'drive'
    assert data_main(['drive-bag', str(path), '--mode', 'patches',
                      '--frames', '4', '--size', '96x128',
                      '--no-progress']) == 0
    return path


def _params_file(path: Path, values: dict[str, Any]) -> Path:
    lines = ['/**:', '  ros__parameters:'] + [f'    {k}: {json.dumps(v)}'
                                               for k, v in values.items()]
    path.write_text('\n'.join(lines) + '\n')
    return path


def _report(out: Path) -> dict[str, Any]:
    return json.loads((out / 'report.json').read_text())


def test_every_replay_parameter_is_an_option() -> None:
    parser = build_parser()
    flags = {flag for action in parser._actions for flag in action.option_strings}
    wanted = {'--' + p.name.replace('_', '-') for p in params.PARAMS if p.scope in SCOPES}
    assert wanted <= flags
    args = parser.parse_args(['bag', '--model', 'm.onnx', '--out', 'o', *TOPICS])
    assert params.cli_values(args) == {}  # nothing given: the file or the defaults decide
    args = parser.parse_args(['bag', '--model-path', 'm.onnx', '--out', 'o', *TOPICS,
                              '--temperature', '0.2', '--eviction', 'least_used'])
    assert args.model == Path('m.onnx')  # --model-path is the same option as --model
    assert params.cli_values(args) == {'temperature': 0.2, 'eviction': 'least_used'}


@pytest.mark.slow
def test_params_file_is_used_and_options_override_it(texture_model: TextureModel, bag: Path,
                                                      tmp_path: Path) -> None:
    file = _params_file(tmp_path / 'cost_map.yaml', {
        'temperature': 0.05, 'min_confidence': 0.3, 'buffer_frames': 7, 'bank_size': 16,
        'eviction': 'least_used', 'overlay_max_cost': 2.0,
        'image_transport': 'raw',  # a node-only parameter in the same file: accepted, unused
    })
    out = tmp_path / 'out'
    assert replay_main([str(bag), '--model', str(texture_model.onnx), *TOPICS, '--out',
                        str(out), '--no-progress', '--params', str(file),
                        '--min-confidence', '0.2']) == 0
    report = _report(out)
    used = report['params']
    assert set(used) == {p.name for p in params.PARAMS if p.scope in SCOPES}
    assert used['temperature'] == 0.05 and used['buffer_frames'] == 7
    assert used['bank_size'] == 16 and used['eviction'] == 'least_used'
    assert used['min_confidence'] == 0.2  # the option beats the file
    assert used['overlay_max_cost'] == 2.0 and report['max_cost'] == 2.0
    assert used['model_path'] == str(texture_model.onnx)
    assert used['merge_similarity'] == params.DEFAULTS['merge_similarity']  # in neither
    config = report['config']  # the pipeline's own, validated config
    assert (config['temperature'], config['min_confidence'], config['buffer_frames'],
            config['bank_size'], config['eviction']) == (0.05, 0.2, 7, 16, 'least_used')


@pytest.mark.slow
def test_defaults_without_a_params_file(texture_model: TextureModel, bag: Path,
                                        tmp_path: Path) -> None:
    out = tmp_path / 'out'
    assert replay_main([str(bag), '--model', str(texture_model.onnx), *TOPICS, '--out',
                        str(out), '--no-progress']) == 0
    report = _report(out)
    assert report['params']['bank_size'] == 0  # 0 = the engine's Kmax ...
    assert report['config']['bank_size'] == texture_model.bank_size  # ... which it ran with
    assert report['params']['temperature'] == params.DEFAULTS['temperature']


@pytest.mark.slow
def test_the_repository_params_file(texture_model: TextureModel, bag: Path,
                                    tmp_path: Path) -> None:
    file = REPO / 'config' / 'cost_map.yaml'
    out = tmp_path / 'out'
    assert replay_main([str(bag), '--model', str(texture_model.onnx), *TOPICS, '--out',
                        str(out), '--no-progress', '--params', str(file)]) == 0
    used = _report(out)['params']
    from_file = {k: v for k, v in params.read_params_file(file).items() if k in used}
    assert from_file and {k: used[k] for k in from_file} == from_file


@pytest.mark.slow
def test_a_bank_larger_than_the_model_is_one_line_on_stderr(texture_model: TextureModel,
                                                            bag: Path, tmp_path: Path) -> None:
    """The file keeps 256 prototypes, the model was exported with 32: exit code 2 and one
    line that names both, nothing left behind; the option overrides the file."""
    file = _params_file(tmp_path / 'robot.yaml', {'bank_size': 256, 'temperature': 0.07})
    out = tmp_path / 'out'
    args = [str(bag), '--model', str(texture_model.onnx), *TOPICS, '--out', str(out),
            '--no-progress', '--params', str(file)]
    proc = subprocess.run([sys.executable, '-m', 'contrast_semask_ros.replay', *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if not line.startswith('INFO ')]
    assert len(errors) == 1 and 'ConfigError' in errors[0], proc.stderr  # no traceback
    assert 'bank_size=256' in errors[0] and f'{texture_model.bank_size}' in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['robot.yaml']
    assert replay_main([*args, '--bank-size', '0']) == 0
    used = _report(out)['params']
    assert used['bank_size'] == 0 and used['temperature'] == 0.07  # the file's value


@pytest.mark.slow
@pytest.mark.parametrize('change,message', [
    ({'temperature': 0}, 'temperature must be in'),
    ({'no_such_parameter': 1}, 'unknown parameter'),
])
def test_bad_settings_are_one_clear_error(texture_model: TextureModel, bag: Path,
                                          tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                          change: dict[str, Any], message: str) -> None:
    file = _params_file(tmp_path / 'bad.yaml', change)
    out = tmp_path / 'out'
    assert replay_main([str(bag), '--model', str(texture_model.onnx), *TOPICS, '--out',
                        str(out), '--no-progress', '--params', str(file)]) == 2
    assert 'ConfigError' in caplog.text and message in caplog.text
    assert replay_main([str(bag), '--model', str(tmp_path / 'missing.onnx'), *TOPICS, '--out',
                        str(out), '--no-progress']) == 2
    assert 'missing.onnx' in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bad.yaml']  # nothing left behind

"""The README's command blocks and the Makefile's `demo` recipe, run as written.

Each test names the exact command text it runs, checks that this text is a command line of a
fenced block in README.md (or of the `demo` recipe), and runs it through the installed console
script (`.venv/bin/<name>`) in a temporary working directory where `config/` is this
repository's. Where the README's input is YCOR or a published checkpoint, or its run is too long
for the suite, the test says what it substitutes: a tiny synthetic input in the same place, a
smaller `--n` / `--frames`, or training overrides appended to the same command.
test/test_readme_blocks.py checks that every README block names its test here (or why none).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCRIPTS = ('contrast-semask-convert', 'contrast-semask-data', 'contrast-semask-train',
           'contrast-semask-eval', 'contrast-semask-export', 'contrast-semask-replay',
           'contrast-semask-calibrate-imu')

# Appended to a `contrast-semask-train --config config/train/micro_contrastive.yaml ...` command
# so that it trains for 2 iterations (about 10 s) instead of 300 (about 2 min); the preset's
# scales, crop and loss stay as they are.
TINY_TRAINING = ['--max-iters=2', '--warmup-iters=1', '--eval-interval=2',
                 '--checkpoint-interval=2', '--log-interval=1', '--batch-size=2',
                 '--num-workers=0', '--tensorboard=false', '--progress=false',
                 '--loss.seed.num_samples=128']


# ----------------------------------------------------------------------------------------------
# helpers


def logical_lines(lines: list[str]) -> list[str]:
    """Shell lines with `\\` continuations joined, `# comments` dropped, spaces collapsed."""
    out: list[str] = []
    pending = ''
    for line in lines:
        text = line.rstrip()
        if text.endswith('\\'):
            pending += text[:-1] + ' '
            continue
        text = re.sub(r'(^|\s)#.*$', '', pending + text)
        pending = ''
        if text.strip():
            out.append(' '.join(text.split()))
    return out


def readme_blocks() -> list[tuple[str, list[str]]]:
    """(info string, lines) of every fenced block of README.md."""
    blocks: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    info = ''
    for line in (REPO / 'README.md').read_text().splitlines():
        if line.startswith('```'):
            if current is None:
                current, info = [], line[3:].strip()
            else:
                blocks.append((info, current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def readme_command(command: str) -> list[str]:
    """`command` split into arguments, after checking that it is a README command line."""
    commands = {c for info, lines in readme_blocks() if info != 'python'
                for c in logical_lines(lines)}
    assert command in commands, f'not a command line of a README block: {command}'
    return shlex.split(command)


def readme_python(first_line: str) -> str:
    """The source of the README's python block that starts with `first_line`."""
    found = [lines for info, lines in readme_blocks()
             if info == 'python' and lines and lines[0] == first_line]
    assert len(found) == 1, f'no single README python block starts with {first_line!r}'
    return '\n'.join(found[0]) + '\n'


def run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a console script of this package (args[0]) from the environment's bin/."""
    assert args[0] in SCRIPTS, args[0]
    script = BIN / args[0]
    assert script.is_file(), f'{script} is missing: install the package (make setup)'
    result = subprocess.run([str(script), *args[1:]], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (
        f'{shlex.join(args)} exited {result.returncode}\n{result.stdout[-3000:]}\n'
        f'{result.stderr[-3000:]}')
    return result


def with_value(args: list[str], option: str, value: str) -> list[str]:
    """`args` with the value after `option` replaced (the option must be there)."""
    index = args.index(option)
    return [*args[:index + 1], value, *args[index + 2:]]


def workdir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """An empty working directory whose config/ is this repository's."""
    cwd = tmp_path_factory.mktemp(name)
    (cwd / 'config').symlink_to(REPO / 'config', target_is_directory=True)
    return cwd


# ----------------------------------------------------------------------------------------------
# Data, Training, Evaluation, Export: one working directory, in the README's order

SYNTH = 'contrast-semask-data synth runs/data/synth_raw --n 60 --seed 0'
CONVERT = 'contrast-semask-data convert-ycor runs/data/synth_raw runs/data/synth_ycor'
TRAIN_MICRO = ('contrast-semask-train --config config/train/micro_contrastive.yaml '
               '--data runs/data/synth_ycor')
EVAL_SCALE = ('contrast-semask-eval runs/micro_contrastive/best.pt --data runs/data/synth_ycor '
              '--scale 512,128')
EVAL_TABLE = 'contrast-semask-eval runs/contrastive_s/best.pt --data data/ycor'
EVAL_JSON = 'contrast-semask-eval runs/contrastive_s/best.pt --data data/ycor --json'
EXPORT_FP32 = ('contrast-semask-export onnx runs/micro_contrastive/best.pt --height 544 '
               '--width 1024 --bank-size 1024 --out models/micro_544x1024.onnx')
EXPORT_FP16 = ('contrast-semask-export onnx runs/micro_contrastive/best.pt --height 544 '
               '--width 1024 --bank-size 1024 --fp16 --out models/micro_544x1024_fp16.onnx')


@pytest.fixture(scope='module')
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return workdir(tmp_path_factory, 'readme')


@pytest.fixture(scope='module')
def synth_data(workspace: Path) -> Path:
    run(with_value(readme_command(SYNTH), '--n', '5'), workspace)
    run(readme_command(CONVERT), workspace)
    return workspace / 'runs/data/synth_ycor'


@pytest.fixture(scope='module')
def micro_checkpoint(workspace: Path, synth_data: Path) -> Path:
    run(readme_command(TRAIN_MICRO) + TINY_TRAINING, workspace)
    return workspace / 'runs/micro_contrastive/best.pt'


@pytest.fixture(scope='module')
def exported(workspace: Path, micro_checkpoint: Path) -> Path:
    run(readme_command(EXPORT_FP32), workspace)
    run(readme_command(EXPORT_FP16), workspace)
    return workspace / 'models'


@pytest.mark.slow
def test_data_synth_then_convert(synth_data: Path) -> None:
    """Data and Training: `synth ... --n 60 --seed 0` with `--n 5` (1024x544 frames, as
    written), then `convert-ycor` exactly as written."""
    manifest = json.loads((synth_data / 'manifest.json').read_text())
    assert manifest['splits']['train']['num_images'] == 4
    assert manifest['splits']['valid']['sizes'] == {'1024x544': 1}
    assert len(list((synth_data / 'labels/valid').glob('iid*.png'))) == 1


@pytest.mark.slow
def test_convert_ycor_zip(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Data: `convert-ycor yamaha_v0.zip data/ycor` as written, on a tiny synthetic
    `yamaha_v0.zip` (3 frames of 64x48 in YCOR's raw layout) in place of YCOR's."""
    from contrast_semask_train.data import write_synthetic_ycor

    cwd = workdir(tmp_path_factory, 'ycor_zip')
    raw = cwd / 'raw' / 'yamaha_v0'
    write_synthetic_ycor(raw, n=3, seed=1, height=48, width=64, valid_fraction=0.34,
                         progress=False)
    with zipfile.ZipFile(cwd / 'yamaha_v0.zip', 'w') as archive:
        for path in sorted(raw.rglob('*')):
            archive.write(path, path.relative_to(raw.parent).as_posix())
    run(readme_command('contrast-semask-data convert-ycor yamaha_v0.zip data/ycor'), cwd)
    manifest = json.loads((cwd / 'data/ycor/manifest.json').read_text())
    assert manifest['splits']['train']['num_images'] == 2
    assert manifest['splits']['valid']['num_images'] == 1


@pytest.mark.slow
def test_train_micro_then_eval_at_scale(workspace: Path, micro_checkpoint: Path,
                                        synth_data: Path) -> None:
    """Training (CPU block): the micro training command as written plus TINY_TRAINING (2
    iterations instead of 300), then `contrast-semask-eval ... --scale 512,128` as written."""
    assert (workspace / 'runs/micro_contrastive/last.pt').is_file()
    result = run(readme_command(EVAL_SCALE), workspace)
    assert re.search(r'^mIoU\s+[0-9.]+$', result.stdout, re.MULTILINE), result.stdout
    assert re.search(r'^auroc_unknown\s+[0-9.]+$', result.stdout, re.MULTILINE), result.stdout


@pytest.mark.slow
def test_eval_table_and_json(workspace: Path, micro_checkpoint: Path, synth_data: Path) -> None:
    """Evaluation: both commands as written, with the micro checkpoint in place of
    runs/contrastive_s/best.pt and the synthetic data set in place of data/ycor (symlinks)."""
    (workspace / 'runs/contrastive_s').mkdir(parents=True)
    (workspace / 'runs/contrastive_s/best.pt').symlink_to(micro_checkpoint)
    (workspace / 'data').mkdir()
    (workspace / 'data/ycor').symlink_to(synth_data, target_is_directory=True)
    table = run(readme_command(EVAL_TABLE), workspace)
    assert re.search(r'^mIoU\s+[0-9.]+$', table.stdout, re.MULTILINE), table.stdout
    result = json.loads(run(readme_command(EVAL_JSON), workspace).stdout)
    assert result['num_images'] == 1 and 0.0 <= result['mIoU'] <= 1.0
    assert 0.0 <= result['auroc_unknown'] <= 1.0 and result['embedding_dim'] == 16


@pytest.mark.slow
def test_export_onnx_fp32_and_fp16(exported: Path) -> None:
    """Export: both `contrast-semask-export onnx` commands exactly as written (544x1024, bank
    1024), on the micro model of the Training block (2 iterations)."""
    for name, precision in (('micro_544x1024', 'fp32'), ('micro_544x1024_fp16', 'fp16')):
        spec = json.loads((exported / f'{name}.onnx.json').read_text())
        parity = json.loads((exported / f'{name}.onnx.parity.json').read_text())
        assert spec['precision'] == precision, spec
        assert parity['passed'] is True, parity


@pytest.mark.slow
def test_backends_snippet(workspace: Path, exported: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Export: the README's `open_backend` snippet, run as written on the exported model, with
    a random camera image and a bank of 3 prototypes as its inputs."""
    import numpy as np

    monkeypatch.chdir(workspace)
    rng = np.random.default_rng(0)
    prototypes = rng.standard_normal((3, 16)).astype(np.float32)
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    namespace = {'image_rgb_uint8': rng.integers(0, 256, (544, 1024, 3), dtype=np.uint8),
                 'prototypes': prototypes, 'costs': np.array([0.0, 0.5, 1.0], np.float32)}
    exec(compile(readme_python('from contrast_semask_ros.backends import Bank, open_backend'),
                 'README.md', 'exec'), namespace)
    out = namespace['out']
    assert out.embedding.shape == (1, 16, 136, 256)
    assert out.cost.shape == out.confidence.shape == (1, 1, 544, 1024)
    assert np.isfinite(out.cost).all() and out.infer_ms > 0


# ----------------------------------------------------------------------------------------------
# Model: a published SeMask-S checkpoint, synthesised from the key table (test/semask_keys.py)


@pytest.fixture(scope='module')
def published_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from semask_keys import semask_key_shapes, synthetic_semask_state

    cwd = workdir(tmp_path_factory, 'published')
    shapes = semask_key_shapes(96, (2, 2, 18, 2), (3, 6, 12, 24), 7, 150)
    torch.save({'state_dict': synthetic_semask_state(shapes, 7)},
               cwd / 'semfpn_semask_small_ade20k.pth')
    return cwd


@pytest.mark.slow
def test_published_checkpoint_snippet(published_small: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Model: the README's `load_semask_checkpoint` snippet as written, on a synthetic
    mmseg-format SeMask-S ADE20K file (random weights, the published keys and shapes)."""
    monkeypatch.chdir(published_small)
    namespace: dict = {}
    exec(compile(readme_python('from contrast_semask_train.model import '
                               'ADE20K_SEMANTIC_ATTENTION, build_model, load_semask_checkpoint'),
                 'README.md', 'exec'), namespace)
    report = namespace['report']
    assert report.loaded and not report.reinitialized and not report.ignored
    assert 'loaded' in report.summary()


@pytest.mark.slow
def test_convert_published_checkpoint(published_small: Path) -> None:
    """Model: `contrast-semask-convert ...` exactly as written, on the synthetic SeMask-S file."""
    from contrast_semask_train.model import load_checkpoint

    run(readme_command('contrast-semask-convert semfpn_semask_small_ade20k.pth -o '
                       'runs/init/ycor_small.pt --variant small --num-classes 8 --head '
                       'contrastive --seed-classes ycor'), published_small)
    model, payload = load_checkpoint(published_small / 'runs/init/ycor_small.pt')
    assert model.config.num_classes == 8 and payload['step'] == 0
    assert payload['conversion']['seeded']


# ----------------------------------------------------------------------------------------------
# make demo: the Makefile's recipe, each command run (smaller where noted), and the replay block

DEMO_COMMANDS = [
    'contrast-semask-data synth runs/demo/synth_raw --n 60 --seed 0',
    'contrast-semask-data convert-ycor runs/demo/synth_raw runs/demo/synth_ycor',
    'contrast-semask-train --config config/train/micro_contrastive.yaml '
    '--data runs/demo/synth_ycor --work-dir runs/demo/train',
    'contrast-semask-export onnx runs/demo/train/best.pt --height 128 --width 240 '
    '--bank-size 256 --out runs/demo/model.onnx',
    'contrast-semask-data drive-bag runs/demo/calibration_drive --frames 200 --size 68x128 '
    '--seed 3',
    'contrast-semask-calibrate-imu runs/demo/calibration_drive '
    '--write-params runs/demo/imu_calibration.yaml',
    'contrast-semask-data drive-bag runs/demo/drive --frames 120 --size 272x512 --seed 1000',
    'contrast-semask-replay runs/demo/drive --model runs/demo/model.onnx '
    '--params config/cost_map.yaml --image-topic /camera/image_raw '
    '--supervision imu --supervision-params runs/demo/imu_calibration.yaml '
    '--ground-truth-topic /ground_truth/cost --footprint-truth-topic /ground_truth/patch_cost '
    '--hold-out-every 5 --out runs/demo/replay',
    'contrast-semask-replay runs/demo/drive --model runs/demo/model.onnx '
    '--params config/cost_map.yaml --image-topic /camera/image_raw '
    '--supervision imu --supervision-params runs/demo/imu_calibration.yaml --truth-costs '
    '--ground-truth-topic /ground_truth/cost --footprint-truth-topic /ground_truth/patch_cost '
    '--hold-out-every 5 --out runs/demo/replay_truth_costs',
]


def makefile_demo_commands() -> list[str]:
    """The `demo` recipe's commands, $(BIN)/$(DEMO) expanded, the `rm -rf` and `@echo` lines
    left out (they only clear the directory and print where the report is)."""
    text = (REPO / 'Makefile').read_text()
    variables = dict(re.findall(r'^([A-Z_]+) := (.*)$', text, re.MULTILINE))
    recipe = re.search(r'^demo:.*\n((?:\t.*\n)+)', text, re.MULTILINE)
    assert recipe, 'no demo target in the Makefile'
    commands = []
    for line in logical_lines(recipe.group(1).splitlines()):
        while '$(' in line:  # recursively: $(BIN) is $(VENV)/bin
            line = re.sub(r'\$\((\w+)\)', lambda m: variables[m.group(1)], line)
        if line.startswith(('rm -rf ', '@echo ')):
            continue
        assert line.startswith(variables['VENV'] + '/bin/'), line
        commands.append(line[len(variables['VENV'] + '/bin/'):])
    return commands


@pytest.mark.static
def test_makefile_demo_target_is_the_tested_commands() -> None:
    """The commands test_make_demo_commands_run runs are the `demo` recipe's, in its order."""
    assert makefile_demo_commands() == DEMO_COMMANDS
    variables = dict(re.findall(r'^([A-Z_]+) := (.*)$', (REPO / 'Makefile').read_text(),
                                re.MULTILINE))
    assert variables['DEMO'] == 'runs/demo' and variables['BIN'] == '$(VENV)/bin'


@pytest.fixture(scope='module')
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = workdir(tmp_path_factory, 'demo')
    (synth, convert, train, export, calibration_bag, calibrate, drive_bag, replay,
     replay_truth) = map(shlex.split, DEMO_COMMANDS)
    run(with_value(synth, '--n', '5'), cwd)
    run(convert, cwd)
    run(train + TINY_TRAINING, cwd)
    run(export, cwd)
    run(with_value(calibration_bag, '--frames', '60'), cwd)
    run(calibrate, cwd)
    run(with_value(drive_bag, '--frames', '30'), cwd)
    run(replay, cwd)
    run(replay_truth, cwd)
    return cwd / 'runs/demo'


@pytest.mark.slow
def test_make_demo_commands_run(demo: Path) -> None:
    """`make demo`: every command of its recipe (DEMO_COMMANDS) in its order, as written except
    `synth --n 5` (not 60), the drive bags' `--frames 60` and `30` (not 200 and 120) and
    TINY_TRAINING appended to the training command (2 iterations, not 300)."""
    report = json.loads((demo / 'replay/report.json').read_text())
    assert report['params']['bank_size'] == 0 and report['config']['bank_size'] == 256
    assert report['frames'] == 30 and report['ground_truth'], report
    for name in ('latency.png', 'coverage.png', 'held_out.png', 'contact_sheet.png'):
        assert (demo / 'replay' / name).is_file(), name
    assert (demo / 'replay/replay_bag').is_dir()
    calibration = (demo / 'imu_calibration.yaml').read_text()
    assert 'power_at_cost_0' in calibration and 'power_at_cost_1' in calibration
    supervision = report['supervision']  # self-supervised: labels from the IMU, into the bank
    assert supervision['labels'] > 0 and report['patches_used'] > 0
    assert supervision['config']['power_at_cost_1'] == pytest.approx(
        float(calibration.split('power_at_cost_1:')[1]))
    truth = json.loads((demo / 'replay_truth_costs/report.json').read_text())
    assert truth['supervision']['label_costs'] == 'ground_truth'
    assert truth['supervision']['labels'] == supervision['labels']  # the same footprints


REPLAY = ('contrast-semask-replay drive_bag/ --model model.onnx --image-topic /camera/image_raw '
          '--supervision imu --out replay/ --hold-out-every 5 '
          '[--realtime] [--params config/cost_map.yaml] [--temperature 0.05 --bank-size 128 ...]')


@pytest.mark.slow
def test_replay_block_with_and_without_its_options(
        demo: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Replay: the README's command without its [optional] parts, then with all of them
    (`--realtime --params config/cost_map.yaml --temperature 0.05 --bank-size 128`), on the
    demo's model and 10-frame drive bag (linked as model.onnx and drive_bag/)."""
    cwd = workdir(tmp_path_factory, 'replay')
    for name in ('model.onnx', 'model.onnx.json'):
        (cwd / name).symlink_to(demo / name)
    (cwd / 'drive_bag').symlink_to(demo / 'drive', target_is_directory=True)
    words = readme_command(REPLAY)
    first = words.index('[--realtime]')
    required = words[:first]
    optional = [w.strip('[]') for w in words[first:] if w not in ('...]', '...')]
    assert optional == ['--realtime', '--params', 'config/cost_map.yaml', '--temperature',
                        '0.05', '--bank-size', '128']
    run(required, cwd)
    plain = json.loads((cwd / 'replay/report.json').read_text())
    assert plain['config']['bank_size'] == 256
    run([*with_value(required, '--out', 'replay_all/'), *optional], cwd)
    report = json.loads((cwd / 'replay_all/report.json').read_text())
    assert report['params']['temperature'] == 0.05 and report['config']['bank_size'] == 128

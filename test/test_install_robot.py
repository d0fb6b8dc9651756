"""The robot's install path (issue 14): tools without torch, extras that hold what they run.

- `contrast-semask-export trt` (ONNX -> TensorRT engine) runs through its console script with
  torch and every training module blocked, up to the point where TensorRT is needed (exit 3
  and what to install, not a torch ImportError).
- `contrast-semask-data drive-bag` and `contrast-semask-replay` of an ONNX model run with torch
  and the training modules blocked (the commands of the `[replay]` extra).
- Each extra lists the packages its commands import: an AST walk from the commands' modules
  over every import (module level and inside functions) collects the third-party packages.

Console scripts are taken from setup.py (not from an installed environment that may predate a
change to it) and run as their generated wrapper does: import the target, call it.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
OWN = ('contrast_semask_ros', 'contrast_semask_train')

# What a robot installed as the README says does not have (rosdep, no torch, no training
# stack). Blocking a module by putting None into sys.modules makes any import of it, direct or
# transitive, raise ImportError (test_import_rules.py checks that this really blocks).
TORCH = ('torch', 'torchvision', 'onnxscript', 'tensorboard')
TRAINING_MODULES = tuple(f'contrast_semask_train.{name}' for name in (
    'model', 'train', 'losses', 'config', 'evaluate', 'export', 'convert_checkpoint',
    'data.dataset', 'data.transforms'))


def console_scripts() -> dict[str, str]:
    """setup.py's console_scripts, name -> 'module:function' (read with ast, not run)."""
    tree = ast.parse((REPO / 'setup.py').read_text(), filename='setup.py')
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'setup':
            for keyword in node.keywords:
                if keyword.arg == 'entry_points':
                    scripts = ast.literal_eval(keyword.value)['console_scripts']
                    return dict(re.fullmatch(r'\s*(\S+)\s*=\s*(\S+)\s*', line).groups()
                                for line in scripts)
    raise AssertionError('setup.py has no setup(entry_points=...)')


def setup_requirements() -> tuple[set[str], dict[str, set[str]]]:
    """(install_requires, extras_require) of setup.py as lower-case distribution names."""
    tree = ast.parse((REPO / 'setup.py').read_text(), filename='setup.py')

    def names(requirements: list[str]) -> set[str]:
        return {re.match(r'[A-Za-z0-9._-]+', r).group(0).lower() for r in requirements}

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'setup':
            kwargs = {k.arg: k.value for k in node.keywords}
            extras = ast.literal_eval(kwargs['extras_require'])
            return (names(ast.literal_eval(kwargs['install_requires'])),
                    {extra: names(reqs) for extra, reqs in extras.items()})
    raise AssertionError('setup.py has no setup() call')


def run_console_script(name: str, args: list[str], blocked: tuple[str, ...],
                       timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run console script `name` as its wrapper would, with `blocked` modules unimportable:
    a finder that raises ModuleNotFoundError for them, as on a machine without them (not
    `sys.modules[name] = None`, which libraries that probe sys.modules, such as scipy's array
    API layer, take for an imported module)."""
    module, function = console_scripts()[name].split(':')
    code = '\n'.join([
        'import sys',
        'class _Blocked:',
        '    def find_spec(self, fullname, path=None, target=None):',
        f'        if fullname.split(".")[0] in {blocked!r}:',
        '            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)',
        'sys.meta_path.insert(0, _Blocked())',
        f'sys.path.insert(0, {str(REPO)!r})',
        f'sys.argv = {[name, *args]!r}',
        f'from {module} import {function}',
        f'sys.exit({function}())',
    ])
    return subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def _fake_onnx(tmp_path: Path) -> Path:
    """A file named .onnx with a valid EngineSpec beside it (recording the file's sha256):
    enough for `trt` to get as far as needing TensorRT."""
    import dataclasses
    import hashlib

    from contrast_semask_ros.engine_spec import EngineSpec, spec_path

    onnx = tmp_path / 'm.onnx'
    onnx.write_bytes(b'not really onnx')
    spec = EngineSpec.build(height=32, width=32, bank_size=4, embedding_dim=16, stride=4,
                            mean=(0, 0, 0), std=(1, 1, 1), class_names=(),
                            checkpoint_sha256='0' * 64, precision='fp32', opset=18)
    spec = dataclasses.replace(spec, onnx_sha256=hashlib.sha256(onnx.read_bytes()).hexdigest())
    spec_path(onnx).write_text(spec.to_json())
    return onnx


def test_export_trt_console_script_runs_without_torch_or_training_modules(tmp_path: Path):
    # tensorrt (and pycuda) are blocked too, so that this stops where TensorRT is needed on
    # every machine, with or without it; onnx too: a robot need not have it to build an engine
    blocked = (*TORCH, *TRAINING_MODULES, 'onnx', 'tensorrt', 'pycuda')
    proc = run_console_script('contrast-semask-export', [
        'trt', str(_fake_onnx(tmp_path)), '--out', str(tmp_path / 'm.engine')], blocked)
    assert proc.returncode == 3, proc.stderr  # EXIT_ENVIRONMENT: TensorRT is missing
    assert 'TensorRT is not installed' in proc.stderr
    assert 'install the `tensorrt` package' in proc.stderr
    assert 'torch' not in proc.stderr.replace('pytorch', ''), proc.stderr
    assert not (tmp_path / 'm.engine').exists()
    # a missing file is still bad input (2), also without torch
    proc = run_console_script('contrast-semask-export', [
        'trt', str(tmp_path / 'missing.onnx'), '--out', str(tmp_path / 'x.engine')], blocked)
    assert proc.returncode == 2 and 'ONNX file not found' in proc.stderr, proc.stderr


def test_export_onnx_still_goes_through_the_torch_exporter(tmp_path: Path):
    # the lazy dispatch: `onnx` needs torch, and without it says so with exit code 3
    proc = run_console_script('contrast-semask-export', [
        'onnx', str(tmp_path / 'm.pt'), '--height', '32', '--width', '32',
        '--out', str(tmp_path / 'm.onnx')], ('torch',))
    assert proc.returncode != 0 and 'torch' in proc.stderr


@pytest.mark.slow
def test_drive_bag_and_onnx_replay_run_without_torch(texture_model, tmp_path: Path):
    """The two commands of the `[replay]` extra (README, Replay) with torch blocked: a
    compressed drive bag, replayed from its compressed topic with the node's params file."""
    blocked = (*TORCH, *TRAINING_MODULES, 'onnx', 'tensorrt', 'pycuda')
    bag = tmp_path / 'drive'
    proc = run_console_script('contrast-semask-data', [
        'drive-bag', str(bag), '--frames', '12', '--size', '96x128', '--seed', '1000',
        '--compressed', '--no-progress'], blocked)
    assert proc.returncode == 0, proc.stderr
    proc = run_console_script('contrast-semask-replay', [
        str(bag), '--model', str(texture_model.onnx), '--params', 'config/cost_map.yaml',
        '--image-topic', '/camera/image_raw/compressed', '--supervision', 'imu',
        '--ground-truth-topic', '/ground_truth/cost', '--hold-out-every', '5',
        '--out', str(tmp_path / 'replay')], blocked)
    assert proc.returncode == 0, proc.stderr
    assert 'supervision' in json.loads((tmp_path / 'replay' / 'report.json').read_text())
    proc = run_console_script('contrast-semask-calibrate-imu', [str(bag)], blocked)
    assert proc.returncode == 0 and 'power_at_cost_1' in proc.stderr, proc.stderr


# --- Each extra holds what its commands import --------------------------------------------

# import name -> distribution name, where they differ
DISTRIBUTIONS = {'cv2': 'opencv-python-headless', 'skimage': 'scikit-image', 'yaml': 'pyyaml',
                 'PIL': 'pillow'}
# Not pip extras: TensorRT and pycuda come from JetPack or NVIDIA (README, Install on a robot).
VENDOR = {'tensorrt', 'pycuda'}


class Command(NamedTuple):
    extras: tuple[str, ...]  # what the README tells its user to install
    modules: tuple[str, ...]  # where the walk starts; every import in them is followed
    module_level_only: tuple[str, ...] = ()  # start modules shared with other commands
    # modules of other commands or backends that the walk does not enter, with why
    skip: tuple[str, ...] = ()
    # third-party imports the walk finds that this command never reaches, each with why
    unused: dict[str, str] = {}


OTHER_BACKENDS = ('contrast_semask_ros.backends.torch_backend',
                  'contrast_semask_ros.backends.tensorrt_backend')
COMMANDS = {
    # `pip install .[replay]`: replay an ONNX model; make a synthetic drive bag to replay
    'contrast-semask-replay': Command(('replay',), ('contrast_semask_ros.replay',),
                                      skip=OTHER_BACKENDS),
    'contrast-semask-calibrate-imu': Command(('replay',), ('contrast_semask_ros.calibrate_imu',)),
    'contrast-semask-data drive-bag': Command(
        ('replay',), ('contrast_semask_train.data.cli', 'contrast_semask_train.data.drive_bag',
                      'contrast_semask_train.data.drive_sim'),
        module_level_only=('contrast_semask_train.data.cli',),
        unused={'PIL': 'synth.py writes PNG label files (the synth command) with pillow; '
                       'drive-bag renders scenes with OpenCV and scikit-image only'}),
    # `pip install .[train,export]` on a workstation
    'contrast-semask-train': Command(('train',), ('contrast_semask_train.train',),
                                     skip=OTHER_BACKENDS),
    'contrast-semask-data synth, convert-ycor': Command(
        ('train',), ('contrast_semask_train.data.cli',),
        skip=(*OTHER_BACKENDS, 'contrast_semask_train.data.drive_bag',
              'contrast_semask_train.data.drive_sim')),
    'contrast-semask-eval': Command(('train',), ('contrast_semask_train.evaluate',),
                                    skip=OTHER_BACKENDS),
    'contrast-semask-convert': Command(('train',), ('contrast_semask_train.convert_checkpoint',),
                                       skip=OTHER_BACKENDS),
    'contrast-semask-export': Command(('train', 'export'), ('contrast_semask_train.export',),
                                      skip=OTHER_BACKENDS),
}


def _module_path(module: str) -> Path | None:
    base = REPO.joinpath(*module.split('.'))
    for path in (base.with_suffix('.py'), base / '__init__.py'):
        if path.is_file():
            return path
    return None


def _imports(module: str, module_level_only: bool) -> list[str]:
    """Absolute names of every import in `module`'s file, except under `if TYPE_CHECKING:`
    (and only the module-level ones if asked)."""
    path = _module_path(module)
    is_package = path.name == '__init__.py'
    package = module if is_package else module.rpartition('.')[0]
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, 'id', getattr(
                node.test, 'attr', '')) == 'TYPE_CHECKING':
            for child in node.orelse:
                visit(child)
            return
        if module_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                   ast.ClassDef, ast.Lambda)):
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1])
                name = f'{base}.{node.module}' if node.module else base
            else:
                name = node.module
            found.append(name)
            found.extend(f'{name}.{alias.name}' for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, 'attr', '') == 'import_module' \
                and node.args and isinstance(node.args[0], ast.Constant):
            target = node.args[0].value
            if target.startswith('.'):  # importlib.import_module(f'.{x}', __name__) is dynamic
                return
            found.append(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def third_party_imports(command: Command) -> dict[str, set[str]]:
    """Top-level third-party package -> the own modules importing it, over every module the
    command's start modules reach (an import of a.b.c also runs a and a.b)."""
    seen: set[str] = set()
    todo = list(command.modules)
    found: dict[str, set[str]] = {}
    while todo:
        module = todo.pop()
        if module in seen or module in command.skip:
            continue
        seen.add(module)
        if _module_path(module) is None:  # `from package import name`: not a module
            continue
        for name in _imports(module, module in command.module_level_only):
            top = name.split('.')[0]
            if top in OWN:
                parts = name.split('.')
                todo.extend('.'.join(parts[:i]) for i in range(1, len(parts) + 1))
            elif top != '__future__' and top not in sys.stdlib_module_names:
                found.setdefault(top, set()).add(module)
    return found


def test_the_walk_finds_lazy_imports():
    # the replay's progress bar and report plots are imported inside functions
    found = third_party_imports(COMMANDS['contrast-semask-replay'])
    assert {'numpy', 'rosbags', 'tqdm', 'matplotlib', 'onnxruntime', 'yaml'} <= set(found)
    assert 'torch' not in found, found.get('torch')


@pytest.mark.parametrize('name', sorted(COMMANDS))
def test_each_extra_lists_what_its_commands_import(name: str):
    command = COMMANDS[name]
    base, extras = setup_requirements()
    provided = base.union(*(extras[extra] for extra in command.extras))
    found = third_party_imports(command)
    for package, why in command.unused.items():
        assert package in found, f'{name}: {package} is no longer imported; drop "{why}"'
    missing = {
        DISTRIBUTIONS.get(top, top).lower(): sorted(where) for top, where in found.items()
        if top not in VENDOR and top not in command.unused
        and DISTRIBUTIONS.get(top, top).lower() not in provided
    }
    assert not missing, (f'`pip install .[{",".join(command.extras)}]` lacks what {name} '
                         f'imports (package: importing modules): {missing}')

"""Import rules (README, "Repository layout"), enforced.

- `contrast_semask_ros` (the runtime) imports without rclpy and without training/export packages;
  rclpy and the message packages only in `node.py`, inference libraries only in `backends/`.
- `contrast_semask_train.model` imports torch only (plus the standard library).

The runtime checks run in a fresh interpreter in which the forbidden modules are blocked by putting
`None` into `sys.modules`, so that any import of them, direct or transitive, raises ImportError.
"""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNTIME = REPO / 'contrast_semask_ros'
MODEL = REPO / 'contrast_semask_train' / 'model'

ROS = ('rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'std_srvs')
TRAINING = (
    'torch', 'onnx', 'onnxscript', 'onnxruntime', 'tensorrt', 'pycuda', 'yaml', 'tqdm',
    'matplotlib', 'tensorboard', 'contrast_semask_train',
)
# node.py is the rclpy adapter; backends/ import their inference library (the PyTorch backend
# imports torch and the model), so both are checked by their own rules, not by the runtime one.
RUNTIME_EXEMPT = ('contrast_semask_ros.node', 'contrast_semask_ros.backends')
MODEL_BLOCKED = (
    *ROS, 'onnx', 'onnxscript', 'onnxruntime', 'tensorrt', 'pycuda', 'yaml', 'tqdm', 'matplotlib',
    'tensorboard', 'cv2', 'contrast_semask_ros',
)


def _run_blocked(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    script = '\n'.join([
        'import sys',
        f'sys.path.insert(0, {str(REPO)!r})',
        f'for name in {blocked!r}:',
        '    sys.modules[name] = None',
        code,
    ])
    return subprocess.run(
        [sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True, timeout=300,
    )


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def test_blocking_in_sys_modules_really_blocks():
    proc = _run_blocked(('torch', 'json'), 'import json')
    assert proc.returncode != 0
    assert 'import of json halted; None in sys.modules' in proc.stderr


def test_runtime_imports_without_ros_and_training_packages():
    modules = sorted(
        _module_name(path) for path in RUNTIME.rglob('*.py')
        if not _module_name(path).startswith(RUNTIME_EXEMPT)
    )
    assert 'contrast_semask_ros' in modules
    code = '\n'.join(f'import {module}' for module in modules)
    proc = _run_blocked(ROS + TRAINING, code)
    assert proc.returncode == 0, f'runtime imports a forbidden module:\n{proc.stderr}'


@pytest.mark.ros
def test_node_imports_without_training_packages():
    if not (RUNTIME / 'node.py').exists():
        pytest.skip('contrast_semask_ros/node.py does not exist yet')
    pytest.importorskip('rclpy', reason='node.py needs rclpy (requirements/ros-jazzy.txt)')
    proc = _run_blocked(TRAINING, 'import contrast_semask_ros.node')
    assert proc.returncode == 0, f'node.py imports a training-only module:\n{proc.stderr}'


def test_train_package_itself_is_light():
    blocked = ROS + ('torch', 'onnx', 'onnxruntime', 'tensorrt')
    proc = _run_blocked(blocked, 'import contrast_semask_train')
    assert proc.returncode == 0, proc.stderr


def test_model_imports_torch_only():
    if not (MODEL / '__init__.py').exists():
        pytest.skip('contrast_semask_train/model/__init__.py does not exist yet')
    code = (
        'import contrast_semask_train.model\n'
        'from contrast_semask_train.model import build_model\n'
    )
    proc = _run_blocked(MODEL_BLOCKED, code)
    assert proc.returncode == 0, f'the model imports more than torch:\n{proc.stderr}'


# --- The static rules: every import statement anywhere in a file (module level, inside
# functions and methods, under `if TYPE_CHECKING:`) and importlib.import_module('...') calls.
# The subprocess checks above catch what runs at import time; these catch function-level imports
# too, which only run when that code path is taken.


class Rule(NamedTuple):
    where: tuple[str, ...]  # fnmatch patterns of files, relative to contrast_semask_ros/
    lazy: bool  # only inside a function body (or `if TYPE_CHECKING:`), never at import time
    why: str
    only: str = ''  # if set, the imported module must be this one or one of its submodules


ANYWHERE = ('*',)
NODES = ('node.py', '*_node.py')  # the rclpy adapters (cost_map_node; a future supervision_node)
BACKENDS = ('backends/*',)
NEVER = ()

# Third-party packages the runtime may import, and where. The standard library and
# contrast_semask_ros itself are allowed everywhere; a package missing from this table (and not
# a ROS package by ROS_SUFFIXES) is a violation until someone adds it here with a reason.
RUNTIME_RULES: dict[str, Rule] = {
    'numpy': Rule(ANYWHERE, False, 'core dependency (python3-numpy)'),
    'cv2': Rule(ANYWHERE, False, 'core dependency (python3-opencv)'),
    # ROS 2: only the rclpy adapters; the pipeline, bank and backends run without ROS
    'rclpy': Rule(NODES, False, 'ROS 2 client library'),
    'launch': Rule(NODES, False, 'ROS 2 launch'),
    'launch_ros': Rule(NODES, False, 'ROS 2 launch'),
    'ament_index_python': Rule(NODES, False, 'ROS 2 package paths'),
    # TF extrinsics of patch_cost_node, only when camera_pose is not set (tf2_ros_py)
    'tf2_ros': Rule(NODES, True, 'TF lookups (optional: camera_pose replaces them)'),
    # the cost node's start-up check of cost_cloud's layout (sensor_msgs_py, every ROS install)
    'sensor_msgs_py': Rule(NODES, True, "reference PointCloud2 layout (optional: checked where "
                           'installed)'),
    # inference libraries: only the backends, imported when a backend is constructed
    'torch': Rule(BACKENDS, True, 'PyTorch backend'),
    'onnxruntime': Rule(BACKENDS, True, 'ONNX Runtime backend'),
    'tensorrt': Rule(BACKENDS, True, 'TensorRT backend'),
    'pycuda': Rule(BACKENDS, True, 'TensorRT backend buffers and streams'),
    # the model package: only the PyTorch backend, and only contrast_semask_train.model (the
    # deploy wrapper, load_checkpoint, precision helpers); dependencies flow one way
    'contrast_semask_train': Rule(('backends/torch_backend.py',), True,
                                  'PyTorch backend builds the model from a checkpoint',
                                  only='contrast_semask_train.model'),
    # optional extras, lazily where they are used, so the node never needs them
    'yaml': Rule(ANYWHERE, True, 'optional: YAML parameter files (params.py)'),
    'scipy': Rule(('supervision/*',), True,
                  'self-supervision: Welch PSD, spline resampling, rotations (python3-scipy)'),
    'rosbags': Rule(ANYWHERE, True, 'optional [replay] extra: bag reading/writing without ROS'),
    'matplotlib': Rule(ANYWHERE, True, 'optional [replay] extra: report plots'),
    'tqdm': Rule(ANYWHERE, True, 'optional [replay] extra: progress bar'),
    # training/export only: never in the runtime
    'onnx': Rule(NEVER, True, 'export only (the runtime reads ONNX through onnxruntime)'),
    'onnxscript': Rule(NEVER, True, 'export only'),
    'onnx_ir': Rule(NEVER, True, 'export only'),
    'tensorboard': Rule(NEVER, True, 'training only'),
}
# ROS message, service and interface packages (sensor_msgs, std_srvs, rcl_interfaces, ...)
ROS_SUFFIXES = ('_msgs', '_srvs', '_interfaces')
ROS_MESSAGE_RULE = Rule(NODES, False, 'ROS 2 messages and services')

MODEL_ROOT = 'contrast_semask_train.model'  # it may import itself, torch and the stdlib only


class ImportSite(NamedTuple):
    path: Path
    lineno: int
    module: str  # absolute dotted name; for `from a import b` it is 'a.b'
    lazy: bool  # inside a function body or `if TYPE_CHECKING:`, so not run at import time


def _package_of(path: Path, root: Path, root_name: str) -> str:
    """The dotted package that `path` is in: a .py file under the package directory `root`,
    whose dotted name is `root_name`."""
    rel = path.relative_to(root).parts[:-1]  # the folders below root; __init__ or not
    return '.'.join([root_name, *rel])


def _resolve(module: str | None, level: int, package: str) -> str:
    if not level:
        return module or ''
    parts = package.split('.')
    base = parts[: len(parts) - level + 1]
    return '.'.join([*base, module] if module else base)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or (
        isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING')


def _dynamic_import(node: ast.Call) -> str | None:
    """The constant module name of importlib.import_module('x') or __import__('x')."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', '')
    if name not in ('import_module', '__import__') or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def import_sites(path: Path, root: Path, root_name: str) -> list[ImportSite]:
    """Every import in `path` (a file of the package directory `root`, dotted name
    `root_name`), however deeply nested."""
    package = _package_of(path, root, root_name)
    sites: list[ImportSite] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.Import):
            sites.extend(ImportSite(path, node.lineno, alias.name, lazy) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node.module, node.level, package)
            sites.extend(ImportSite(path, node.lineno, f'{module}.{alias.name}', lazy)
                         for alias in node.names)
        elif isinstance(node, ast.Call) and (target := _dynamic_import(node)):
            sites.append(ImportSite(path, node.lineno, _resolve(
                target.lstrip('.'), len(target) - len(target.lstrip('.')), package), lazy))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            lazy = True
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, lazy)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, lazy)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return sites


def _is_stdlib(top: str) -> bool:
    return top == '__future__' or top in sys.stdlib_module_names


def _runtime_rule(top: str) -> Rule | None:
    if top in RUNTIME_RULES:
        return RUNTIME_RULES[top]
    if top.endswith(ROS_SUFFIXES):
        return ROS_MESSAGE_RULE
    return None


def runtime_violations(root: Path) -> list[str]:
    """Imports in the runtime package directory `root` that RUNTIME_RULES does not allow."""
    violations = []
    for path in sorted(root.rglob('*.py')):
        rel = path.relative_to(root).as_posix()
        for site in import_sites(path, root, root.name):
            top = site.module.split('.')[0]
            if _is_stdlib(top) or top == root.name:
                continue
            rule = _runtime_rule(top)
            where = f'{root.name}/{rel}:{site.lineno}: {site.module}'
            if rule is None:
                violations.append(f'{where}: {top!r} is not in RUNTIME_RULES; add it there '
                                  'with where it may be imported and why')
            elif not any(fnmatch.fnmatch(rel, pattern) for pattern in rule.where):
                allowed = ', '.join(rule.where) or 'nowhere in the runtime'
                violations.append(f'{where}: {top} is allowed in {allowed} ({rule.why})')
            elif rule.only and not (site.module == rule.only
                                    or site.module.startswith(f'{rule.only}.')):
                violations.append(f'{where}: only {rule.only} may be imported from {top}')
            elif rule.lazy and not site.lazy:
                violations.append(f'{where}: {top} must be imported inside the function that '
                                  f'needs it, not at import time ({rule.why})')
    return violations


def model_violations(root: Path, own: str = MODEL_ROOT) -> list[str]:
    """Imports in the model package directory `root` (dotted name `own`) beyond itself, torch
    and the stdlib."""
    violations = []
    for path in sorted(root.rglob('*.py')):
        for site in import_sites(path, root, own):
            top = site.module.split('.')[0]
            if site.module == own or site.module.startswith(f'{own}.'):
                continue
            if _is_stdlib(top) or top in ('torch', 'typing_extensions'):
                continue
            rel = path.relative_to(root.parent).as_posix()
            violations.append(f'{rel}:{site.lineno}: {site.module}')
    return violations


@pytest.mark.static
def test_runtime_imports_follow_the_rules_in_every_function_body():
    violations = runtime_violations(RUNTIME)
    assert not violations, 'runtime import rules broken:\n' + '\n'.join(violations)


@pytest.mark.static
def test_model_imports_are_torch_and_stdlib_in_every_function_body():
    if not MODEL.is_dir():
        pytest.skip('contrast_semask_train/model/ does not exist yet')
    violations = model_violations(MODEL)
    assert not violations, 'model imports beyond stdlib/torch:\n' + '\n'.join(violations)


def _plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.static
def test_runtime_checker_catches_planted_imports_anywhere(tmp_path: Path):
    root = _plant(tmp_path / 'contrast_semask_ros', {
        '__init__.py': '',
        'replay.py': 'def f():\n    import contrast_semask_train.train\n',
        'pipeline.py': (
            'from contrast_semask_ros import codec\n'
            'from . import bank\n'
            'class A:\n'
            '    def m(self):\n'
            '        def inner():\n'
            '            import rclpy\n'
            '            from sensor_msgs.msg import Image\n'
            '            return lambda: __import__("torch")\n'
        ),
        'params.py': 'import yaml\n\n\ndef load():\n    import yaml\n',
        'bagio.py': ('from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n'
                     '    from rosbags.typesys.store import Typestore\n'
                     'import importlib\n\n\ndef g():\n    importlib.import_module("onnx")\n'),
        'report.py': 'def h():\n    import requests\n',
        'supervision_node.py': 'import rclpy\nfrom std_srvs.srv import Trigger\n',
        'backends/__init__.py': 'from .base import Backend\n',
        'backends/torch_backend.py': (
            'def load():\n'
            '    import torch\n'
            '    from contrast_semask_train.model import DeployWrapper\n'
            '    from contrast_semask_train.model.checkpoint import file_sha256\n'
            '    from contrast_semask_train import model\n'
            '    from contrast_semask_train import export\n'
        ),
        'backends/onnxruntime_backend.py': 'import onnxruntime\n',
    })
    found = runtime_violations(root)
    flagged = {line.split(': ')[0].split(':')[0] + ' ' + line.split(': ')[1] for line in found}
    assert flagged == {
        'contrast_semask_ros/replay.py contrast_semask_train.train',
        'contrast_semask_ros/pipeline.py rclpy',
        'contrast_semask_ros/pipeline.py sensor_msgs.msg.Image',
        'contrast_semask_ros/pipeline.py torch',
        'contrast_semask_ros/params.py yaml',  # the module-level one; the lazy one is fine
        'contrast_semask_ros/bagio.py onnx',
        'contrast_semask_ros/report.py requests',
        'contrast_semask_ros/backends/torch_backend.py contrast_semask_train.export',
        'contrast_semask_ros/backends/onnxruntime_backend.py onnxruntime',  # not lazy
    }, '\n'.join(found)
    assert len(found) == len(flagged)


@pytest.mark.static
def test_model_checker_catches_planted_imports_anywhere(tmp_path: Path):
    root = _plant(tmp_path / 'contrast_semask_train' / 'model', {
        '__init__.py': 'from .deploy import f\n',
        'deploy.py': (
            'import torch\nimport torch.nn.functional as F\nfrom .config import X\n'
            'from contrast_semask_train.model.layers import y\n\n\n'
            'def f():\n'
            '    import numpy\n'
            '    from ..data import synth\n'
            '    from contrast_semask_ros import engine_spec\n'
        ),
    })
    found = model_violations(root)
    assert [line.split(': ')[1] for line in found] == [
        'numpy', 'contrast_semask_train.data.synth', 'contrast_semask_ros.engine_spec'], found

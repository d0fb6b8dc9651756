"""Import rules from docs/ARCHITECTURE.md, enforced.

- `contrast_semask_ros` (the runtime) imports without rclpy and without training/export packages;
  rclpy and the message packages only in `node.py`, inference libraries only in `backends/`.
- `contrast_semask_train.model` imports torch only (plus the standard library).

The runtime checks run in a fresh interpreter in which the forbidden modules are blocked by putting
`None` into `sys.modules`, so that any import of them, direct or transitive, raises ImportError.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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
MODEL_ALLOWED_ROOTS = {'__future__', 'torch', 'typing_extensions'} | set(sys.stdlib_module_names)


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


def _import_time_imports(tree: ast.Module):
    """Import statements executed at import time (everything outside function bodies)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


@pytest.mark.static
def test_model_top_level_imports_are_stdlib_or_torch():
    files = sorted(MODEL.rglob('*.py'))
    if not files:
        pytest.skip('contrast_semask_train/model/ does not exist yet')
    violations = []
    for path in files:
        package = _module_name(path if path.name == '__init__.py' else path.parent)
        for node in _import_time_imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif node.level:  # relative: resolve against the file's package
                base = package.split('.')[: len(package.split('.')) - node.level + 1]
                targets = ['.'.join([*base, node.module] if node.module else base)]
            else:
                targets = [node.module]
            for target in targets:
                own = target == 'contrast_semask_train.model' or target.startswith(
                    'contrast_semask_train.model.')
                if not own and target.split('.')[0] not in MODEL_ALLOWED_ROOTS:
                    violations.append(f'{path.relative_to(REPO)}:{node.lineno}: {target}')
    assert not violations, 'model imports beyond stdlib/torch:\n' + '\n'.join(violations)

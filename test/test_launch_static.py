"""Static checks of the launch file and the node's parameter file (no ROS needed).

`ros2 launch` itself needs a ROS 2 install (launch and launch_ros are not on PyPI): on a robot,
`ros2 launch contrast_semask_ros cost_map.launch.py model_path:=...` is the check.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / 'launch' / 'cost_map.launch.py'
PARAMS = REPO / 'config' / 'cost_map.yaml'

pytestmark = pytest.mark.static


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == name]


def _keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {k.arg: k.value for k in call.keywords}


def test_launch_file_declares_described_arguments_and_one_node() -> None:
    tree = ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert functions == {'generate_launch_description'}  # no other logic
    arguments = {}
    for call in _calls(tree, 'DeclareLaunchArgument'):
        keywords = _keywords(call)
        assert 'description' in keywords, ast.unparse(call)
        arguments[call.args[0].value] = keywords
    assert set(arguments) == {'image', 'patch_cost', 'model_path', 'params_file', 'namespace'}
    assert 'default_value' not in arguments['model_path']  # required: no silent default model
    nodes = _calls(tree, 'Node')
    assert len(nodes) == 1
    node = _keywords(nodes[0])
    assert node['package'].value == 'contrast_semask_ros'
    assert node['executable'].value == 'cost_map_node'
    remapped = {pair.elts[0].value for pair in node['remappings'].elts}
    assert remapped == {'image', 'patch_cost'}
    # the default params file is the installed config/cost_map.yaml
    default = ast.unparse(arguments['params_file']['default_value'])
    assert "'config', 'cost_map.yaml'" in default and PARAMS.is_file()


def test_console_script_of_the_launch_file_exists() -> None:
    setup = (REPO / 'setup.py').read_text()
    assert "'cost_map_node = contrast_semask_ros.node:main'" in setup


def test_params_file_is_keyed_for_any_namespace_and_matches_the_node() -> None:
    from contrast_semask_ros.params import BY_NAME as PARAMETERS

    data = yaml.safe_load(PARAMS.read_text())
    assert list(data) == ['/**']  # a key `cost_map:` would be ignored under a namespace
    values = data['/**']['ros__parameters']
    assert set(values) == set(PARAMETERS) - {'model_path'}  # model_path from the launch arg
    for name, value in values.items():
        assert type(value) is type(PARAMETERS[name].default), name  # ROS types are strict
        assert value == PARAMETERS[name].default, f'{name}: YAML and node defaults differ'

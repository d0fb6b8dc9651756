"""Static checks of the launch file and the node's parameter file (no ROS needed).

`ros2 launch` itself needs a ROS 2 install (launch and launch_ros are not on PyPI): on a robot,
`ros2 launch contrast_semask_ros cost_map.launch.py model_path:=...` is the check.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from contrast_semask_ros.supervision.params import COST_MAP_OVERRIDES

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / 'launch' / 'cost_map.launch.py'
PARAMS = REPO / 'config' / 'cost_map.yaml'
PATCH_PARAMS = REPO / 'config' / 'patch_cost.yaml'

pytestmark = pytest.mark.static


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == name]


def _keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {k.arg: k.value for k in call.keywords}


SUPERVISION_TOPICS = {'camera_info': '/camera/camera_info', 'odom': '/odom',
                      'imu': '/imu/data', 'cmd_vel': '/cmd_vel'}


def _launch_nodes() -> tuple[dict[str, dict[str, ast.expr]], list[dict[str, ast.expr]]]:
    """(launch arguments by name -> keywords, the Node actions' keywords)."""
    tree = ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert functions == {'generate_launch_description'}  # no other logic
    arguments = {}
    for call in _calls(tree, 'DeclareLaunchArgument'):
        keywords = _keywords(call)
        assert 'description' in keywords, ast.unparse(call)
        arguments[call.args[0].value] = keywords
    return arguments, [_keywords(call) for call in _calls(tree, 'Node')]


def _remapped(node: dict[str, ast.expr]) -> dict[str, str]:
    """Remapped name -> the source of its target; `*list` entries are unparsed in full."""
    out = {}
    for element in node['remappings'].elts:
        if isinstance(element, ast.Starred):
            out[ast.unparse(element)] = ast.unparse(element)
        else:
            out[element.elts[0].value] = ast.unparse(element.elts[1])
    return out


def _assignments() -> dict[str, str]:
    """The launch function's local variables: name -> its value's source."""
    tree = ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))
    return {n.targets[0].id: ast.unparse(n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)}


def test_launch_file_declares_described_arguments_and_its_nodes() -> None:
    arguments, nodes = _launch_nodes()
    assert set(arguments) == {'image', 'patch_cost', 'model_path', 'params_file', 'namespace',
                              'supervision', 'supervision_params_file', 'rviz',
                              *SUPERVISION_TOPICS}
    assert 'default_value' not in arguments['model_path']  # required: no silent default model
    for name, topic in SUPERVISION_TOPICS.items():
        assert arguments[name]['default_value'].value == topic, name
    assert arguments['supervision']['default_value'].value == 'none'  # today's behaviour
    assert ast.literal_eval(arguments['supervision']['choices']) == ['none', 'imu', 'velocity',
                                                                     'both']
    assert [n['executable'].value for n in nodes] == ['cost_map_node', 'cost_map_node',
                                                      'patch_cost_node', 'rviz2']
    assert arguments['rviz']['default_value'].value == 'false'  # robots run without it
    for node in nodes[:3]:
        assert node['package'].value == 'contrast_semask_ros'
        assert ast.unparse(node['namespace']) == "LaunchConfiguration('namespace')"
    # the default params files are the installed config/cost_map.yaml and patch_cost.yaml
    for argument, file in (('params_file', 'cost_map.yaml'),
                           ('supervision_params_file', 'patch_cost.yaml')):
        default = ast.unparse(arguments[argument]['default_value'])
        assert f"'config', '{file}'" in default and (REPO / 'config' / file).is_file()


def test_without_supervision_only_the_unchanged_cost_node_starts() -> None:
    local = _assignments()
    _, (plain, supervised, patch, _) = _launch_nodes()
    # none: the cost node of before (same params; camera_info remapped for cost_grid/cloud)
    assert local[plain['condition'].id] == (
        """IfCondition(PythonExpression(["'", supervision, "' == 'none'"]))""")
    assert local['supervision'] == "LaunchConfiguration('supervision')"
    assert local[ast.unparse(plain['parameters'])] == (
        "[LaunchConfiguration('params_file'), {'model_path': LaunchConfiguration('model_path')}]")
    assert local[ast.unparse(plain['remappings'])] == (  # camera_info: the world outputs'
        "[('image', LaunchConfiguration('image')), ('patch_cost', "
        "LaunchConfiguration('patch_cost')), ('camera_info', "
        "LaunchConfiguration('camera_info'))]")
    # the others only when supervision is not none
    for node in (supervised, patch):
        assert local[node['condition'].id] == (
            """IfCondition(PythonExpression(["'", supervision, "' != 'none'"]))""")
    assert plain['name'].value == supervised['name'].value == 'cost_map'
    assert plain['executable'].value == supervised['executable'].value


def test_supervision_wires_patch_cost_node_to_the_cost_node() -> None:
    _, (_, supervised, patch, _) = _launch_nodes()
    assert patch['name'].value == 'patch_cost'
    remapped = _remapped(patch)
    # its masks go where the cost node reads them; the sensors from the launch arguments
    assert remapped == {'patch_cost': "LaunchConfiguration('patch_cost')",
                        **{n: f"LaunchConfiguration('{n}')" for n in SUPERVISION_TOPICS}}
    # `keyframes` is relative in both nodes (same namespace): not remapped on either side
    assert 'keyframes' not in _remapped(supervised)
    cost_remapped = _remapped(supervised)
    assert cost_remapped['odom'] == "LaunchConfiguration('odom')"  # the same odometry
    assert '*cost_map_remappings' in cost_remapped
    # parameters: the file, then the signal from the launch argument
    params = patch['parameters'].elts
    assert ast.unparse(params[0]) == "LaunchConfiguration('supervision_params_file')"
    assert ast.unparse(params[1]) == "{'signal': supervision}"
    # the cost node keeps keyframes 0.2 m apart and 60 frames (the overrides replay
    # --supervision uses too), more than patch_cost labels
    assert ast.unparse(supervised['parameters'].elts[-1]) == (
        "{**COST_MAP_OVERRIDES, 'patch_qos_depth': 60}")
    overrides = {**COST_MAP_OVERRIDES, 'patch_qos_depth': 60}
    assert overrides['keyframe_distance_m'] == 0.2 and overrides['buffer_frames'] == 60
    patch_values = yaml.safe_load(PATCH_PARAMS.read_text())['/**']['ros__parameters']
    assert patch_values['max_keyframes'] < overrides['buffer_frames']
    cost_values = yaml.safe_load(PARAMS.read_text())['/**']['ros__parameters']
    assert patch_values['max_age_s'] < cost_values['buffer_age_s']
    assert patch_values['max_keyframes'] <= overrides['patch_qos_depth']  # one update's burst


def test_console_script_of_the_launch_file_exists() -> None:
    setup = (REPO / 'setup.py').read_text()
    assert "'cost_map_node = contrast_semask_ros.node:main'" in setup
    assert "'patch_cost_node = contrast_semask_ros.patch_cost_node:main'" in setup


def test_params_file_is_keyed_for_any_namespace_and_matches_the_node() -> None:
    from contrast_semask_ros.params import BY_NAME as PARAMETERS

    data = yaml.safe_load(PARAMS.read_text())
    assert list(data) == ['/**']  # a key `cost_map:` would be ignored under a namespace
    values = data['/**']['ros__parameters']
    assert set(values) == set(PARAMETERS) - {'model_path'}  # model_path from the launch arg
    for name, value in values.items():
        assert type(value) is type(PARAMETERS[name].default), name  # ROS types are strict
        assert value == PARAMETERS[name].default, f'{name}: YAML and node defaults differ'


def test_patch_cost_params_file_holds_every_parameter_with_the_node_defaults() -> None:
    from contrast_semask_ros.supervision.params import TABLE

    text = PATCH_PARAMS.read_text()
    data = yaml.safe_load(text)
    assert list(data) == ['/**']  # a key `patch_cost:` would be ignored under a namespace
    values = data['/**']['ros__parameters']
    # camera_pose defaults to empty (= TF), which a ROS parameter file cannot hold: it is there
    # as a commented-out example of the right form
    assert set(values) == set(TABLE.by_name) - {'camera_pose'}
    example = next(line for line in text.splitlines() if 'camera_pose:' in line)
    assert example.strip().startswith('# camera_pose: [')
    assert len(TABLE.check('camera_pose', yaml.safe_load(example.split(':', 1)[1]))) == 6
    for name, value in values.items():
        assert type(value) is type(TABLE.by_name[name].default), name  # ROS types are strict
        assert value == TABLE.by_name[name].default, f'{name}: YAML and node defaults differ'
    assert TABLE.read_params_file(PATCH_PARAMS) == values


def _published_topics(*modules: str) -> set[str]:
    """The topic names the nodes' create_publisher calls use (string constants)."""
    topics = set()
    for module in modules:
        tree = ast.parse((REPO / 'contrast_semask_ros' / module).read_text())
        topics |= {call.args[1].value for call in _calls(tree, 'create_publisher')
                   if len(call.args) > 1 and isinstance(call.args[1], ast.Constant)}
    return topics


def test_rviz_view_shows_the_nodes_outputs_in_odom() -> None:
    """config/cost_map.rviz (rviz:=true): every display's topic is an output of the cost node
    or of patch_cost_node (namespace ''), the grid subscribed transient local as the node
    publishes it, the cloud coloured by its cost field, the fixed frame the default
    grid_frame; and the launch file starts rviz2 with that file only when rviz:=true."""
    from contrast_semask_ros import params
    from contrast_semask_ros.render import OUTPUTS
    from contrast_semask_ros.world.cloud import CLOUD_FIELDS

    view = yaml.safe_load((REPO / 'config' / 'cost_map.rviz').read_text())
    manager = view['Visualization Manager']
    assert manager['Global Options']['Fixed Frame'] == params.DEFAULTS['grid_frame'] == 'odom'
    displays = {d['Name']: d for d in manager['Displays']}
    topics = {name: d['Topic']['Value'] for name, d in displays.items() if 'Topic' in d}
    assert topics == {'cost_grid': '/cost_grid', 'cost_cloud': '/cost_cloud',
                      'footprints': '/footprints', 'cost_overlay': '/cost_overlay'}
    published = _published_topics('world_node.py', 'patch_cost_node.py') | set(OUTPUTS)
    assert {t.lstrip('/') for t in topics.values()} <= published
    classes = {name: d['Class'] for name, d in displays.items()}
    assert classes['cost_grid'] == 'rviz_default_plugins/Map'
    assert classes['cost_cloud'] == 'rviz_default_plugins/PointCloud2'
    assert displays['cost_grid']['Topic']['Durability Policy'] == 'Transient Local'
    assert displays['cost_grid']['Color Scheme'] == 'costmap'
    cloud = displays['cost_cloud']
    assert cloud['Channel Name'] in {f.name for f in CLOUD_FIELDS}
    assert (cloud['Min Intensity'], cloud['Max Intensity']) == (0, params.DEFAULTS[
        'grid_max_cost'])
    _, nodes = _launch_nodes()
    rviz = nodes[-1]
    assert rviz['package'].value == 'rviz2'
    assert ast.unparse(rviz['condition']) == "IfCondition(LaunchConfiguration('rviz'))"
    assert "'config', 'cost_map.rviz'" in ast.unparse(rviz['arguments'])

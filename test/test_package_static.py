"""Static checks of the ament_python package files: package.xml, setup.py, setup.cfg and the wheel.

Nothing here needs ROS: package.xml is validated offline with catkin_pkg, setup.py is read with
`ast` (importing it would run setup()), and the wheel is built from a copy of the checkout.
"""

from __future__ import annotations

import ast
import configparser
import email.parser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_install_robot import console_scripts

REPO = Path(__file__).resolve().parents[1]
PACKAGE = 'contrast_semask_ros'
TOP_LEVEL_PACKAGES = ('contrast_semask_ros', 'contrast_semask_train')
CONSOLE_SCRIPTS = {
    'contrast-semask-convert': 'contrast_semask_train.convert_checkpoint:main',
    'contrast-semask-data': 'contrast_semask_train.data.cli:main',
    'contrast-semask-train': 'contrast_semask_train.train:main',
    'contrast-semask-eval': 'contrast_semask_train.evaluate:main',
    'contrast-semask-export': 'contrast_semask_train.export_cli:main',
    'contrast-semask-replay': 'contrast_semask_ros.replay:main',
    'contrast-semask-calibrate-imu': 'contrast_semask_ros.calibrate_imu:main',
    'cost_map_node': 'contrast_semask_ros.node:main',
    'cost_map_lifecycle_node': 'contrast_semask_ros.lifecycle_node:main',
    'patch_cost_node': 'contrast_semask_ros.patch_cost_node:main',
}

REQUIRED_EXEC_DEPENDS = {
    'rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'std_srvs', 'lifecycle_msgs',
    'rcl_interfaces', 'launch', 'launch_ros', 'python3-numpy', 'python3-opencv',
    # patch_cost_node (self-supervision): its messages, TF extrinsics, scipy for the core
    'nav_msgs', 'geometry_msgs', 'visualization_msgs', 'tf2_ros_py', 'python3-scipy',
    # the cost node's world outputs: cost_cloud's reference layout
    'sensor_msgs_py',
    # a rosdep pip key: .onnx models on any robot (README, Install on a robot)
    'python3-onnxruntime-pip',
}
REQUIRED_TEST_DEPENDS = {'python3-pytest'}
# ament's lint test_depends and the test file each one needs (ament_python's templates)
AMENT_LINT_TESTS = {'ament_copyright': 'test_copyright.py', 'ament_flake8': 'test_flake8.py',
                    'ament_pep257': 'test_pep257.py'}
ROS_SUFFIXES = ('_msgs', '_srvs', '_interfaces')
# The robot gets rclpy (and maybe opencv) from apt; torch is for training/export only.
BASE_INSTALL_REQUIRES = {'setuptools', 'numpy'}

pytestmark = pytest.mark.static


def _setup_kwargs() -> dict[str, object]:
    """Literal keyword arguments of the setup() call in setup.py (names resolved one level)."""
    tree = ast.parse((REPO / 'setup.py').read_text(), filename='setup.py')
    constants: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant):
                constants[target.id] = node.value.value
    calls = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == 'setup'
    ]
    assert len(calls) == 1, 'setup.py must call setup() exactly once'
    kwargs: dict[str, object] = {}
    for keyword in calls[0].keywords:
        if isinstance(keyword.value, ast.Constant):
            kwargs[keyword.arg] = keyword.value.value
        elif isinstance(keyword.value, ast.Name) and keyword.value.id in constants:
            kwargs[keyword.arg] = constants[keyword.value.id]
    return kwargs


@pytest.fixture(scope='module')
def package():
    catkin_package = pytest.importorskip('catkin_pkg.package')
    warnings: list[str] = []
    # parse_package validates the manifest (format 3 rules, emails, ...) and raises if invalid.
    parsed = catkin_package.parse_package(str(REPO), warnings=warnings)
    assert warnings == [], f'catkin_pkg warnings for package.xml: {warnings}'
    return parsed


def test_package_xml_identity(package):
    assert package.package_format == 3
    assert package.name == PACKAGE
    assert package.licenses == ['Apache-2.0']
    assert package.maintainers and all(m.email for m in package.maintainers)


def test_package_xml_build_type_is_ament_python(package):
    build_types = [e.content for e in package.exports if e.tagname == 'build_type']
    assert build_types == ['ament_python']


def test_package_xml_dependencies(package):
    exec_depends = {d.name for d in package.exec_depends}
    test_depends = {d.name for d in package.test_depends}
    assert REQUIRED_EXEC_DEPENDS <= exec_depends, REQUIRED_EXEC_DEPENDS - exec_depends
    assert REQUIRED_TEST_DEPENDS <= test_depends, REQUIRED_TEST_DEPENDS - test_depends


def _imported_tops(paths: list[Path]) -> dict[str, str]:
    """Top-level module -> first 'file:line' importing it, over every import in `paths`."""
    found: dict[str, str] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split('.')[0],
                                 f'{path.relative_to(REPO)}:{node.lineno}')
    return found


def test_package_xml_declares_every_ros_package_the_code_imports(package):
    # the node, the lifecycle node and the launch files, everything that runs under ROS
    paths = sorted((REPO / PACKAGE).rglob('*.py')) + sorted((REPO / 'launch').glob('*.py'))
    ros = {top: where for top, where in _imported_tops(paths).items()
           if top in ('rclpy', 'launch', 'launch_ros', 'ament_index_python')
           or top.endswith(ROS_SUFFIXES)}
    assert 'rclpy' in ros and 'rcl_interfaces' in ros, ros
    declared = {d.name for d in package.exec_depends}
    missing = {top: where for top, where in ros.items() if top not in declared}
    assert not missing, f'imported but not an exec_depend in package.xml: {missing}'


def test_package_xml_declares_ament_lint_only_with_its_tests(package):
    test_depends = {d.name for d in package.test_depends}
    for depend, test_file in AMENT_LINT_TESTS.items():
        if depend in test_depends:
            assert (REPO / 'test' / test_file).is_file(), (
                f'package.xml declares {depend} but test/{test_file} does not exist')


def test_package_xml_matches_setup_py(package):
    kwargs = _setup_kwargs()
    assert kwargs.get('name') == package.name
    assert kwargs.get('version') == package.version
    assert kwargs.get('license') == 'Apache-2.0'


def test_setup_cfg_installs_scripts_where_ros2_run_finds_them():
    config = configparser.RawConfigParser()
    assert config.read(REPO / 'setup.cfg'), 'setup.cfg missing'
    expected = f'$base/lib/{PACKAGE}'
    assert config.get('develop', 'script_dir') == expected
    assert config.get('install', 'install_scripts') == expected


def test_ament_resource_marker_exists():
    assert (REPO / 'resource' / PACKAGE).is_file()


def _checkout_files() -> list[Path]:
    """Files a fresh clone would have (tracked and untracked-but-not-ignored), else the tree."""
    if shutil.which('git') and (REPO / '.git').exists():
        listed = subprocess.run(
            ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
            cwd=REPO, capture_output=True, check=True,
        ).stdout.decode().split('\0')
        return [Path(name) for name in listed if name and (REPO / name).is_file()]
    skip = {'.git', '.venv', 'build', 'dist', '__pycache__', '.pytest_cache', '.ruff_cache'}
    return [
        path.relative_to(REPO) for path in REPO.rglob('*')
        if path.is_file() and not skip & set(path.relative_to(REPO).parts)
        and not any(part.endswith('.egg-info') for part in path.parts)
    ]


def build_wheel(source: Path, out: Path) -> Path:
    """Build the wheel from a clean copy of the checkout in `source` (no stale build/ or
    egg-info) into `out`; no network (no build isolation, no dependencies)."""
    for relative in _checkout_files():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, source / relative)
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
         '--disable-pip-version-check', '-w', str(out), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f'pip wheel failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    wheels = list(out.glob('*.whl'))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    source = tmp_path_factory.mktemp('source')
    path = build_wheel(source, tmp_path_factory.mktemp('wheel'))
    with zipfile.ZipFile(path) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    return source, contents


def _dist_info(contents: dict[str, bytes], version: str, name: str) -> str:
    return contents[f'{PACKAGE}-{version}.dist-info/{name}'].decode()


@pytest.mark.slow
def test_wheel_contents(wheel, package):
    source, contents = wheel
    names = set(contents)
    version = package.version

    for top in TOP_LEVEL_PACKAGES:
        assert f'{top}/__init__.py' in names
    # Every module of both packages is shipped: a directory without __init__.py would be missed.
    for top in TOP_LEVEL_PACKAGES:
        for module in (source / top).rglob('*.py'):
            relative = module.relative_to(source).as_posix()
            assert relative in names, f'{relative} is not in the wheel'
    if (source / 'contrast_semask_train' / 'model' / '__init__.py').exists():
        assert 'contrast_semask_train/model/__init__.py' in names

    assert not [n for n in names if n.split('/')[0] == 'test'], 'the test/ package is in the wheel'

    data = f'{PACKAGE}-{version}.data/data/share'
    assert f'{data}/ament_index/resource_index/packages/{PACKAGE}' in names
    assert f'{data}/{PACKAGE}/package.xml' in names
    # Launch files and configs, when there are any, are installed into the share directory.
    for pattern in ('launch/*.launch.py', 'config/*.yaml', 'config/*.rviz',
                    'config/train/*.yaml'):
        for path in source.glob(pattern):
            relative = path.relative_to(source).as_posix()
            assert f'{data}/{PACKAGE}/{relative}' in names, f'{relative} is not installed'


@pytest.mark.slow
def test_wheel_metadata(wheel, package):
    _, contents = wheel
    metadata = email.parser.Parser().parsestr(_dist_info(contents, package.version, 'METADATA'))
    assert metadata['Name'] == PACKAGE
    assert metadata['Version'] == package.version
    base_requires = {
        re.match(r'[A-Za-z0-9._-]+', requirement).group(0).lower()
        for requirement in metadata.get_all('Requires-Dist') or []
        if 'extra ==' not in requirement
    }
    assert base_requires == BASE_INSTALL_REQUIRES


@pytest.mark.slow
def test_wheel_console_scripts_resolve(wheel, package):
    _, contents = wheel
    entry_points = configparser.RawConfigParser()
    entry_points.optionxform = str  # keep script names as written
    entry_points.read_string(_dist_info(contents, package.version, 'entry_points.txt'))
    assert dict(entry_points.items('console_scripts')) == CONSOLE_SCRIPTS
    for target in CONSOLE_SCRIPTS.values():
        module, function = target.split(':')
        path = module.replace('.', '/') + '.py'
        assert path in contents, f'{target}: {path} is not in the wheel'
        tree = ast.parse(contents[path].decode())
        functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert function in functions, f'{target}: no top-level def {function}() in {path}'


@pytest.mark.slow
def test_wheel_data_files_are_the_colcon_install_layout(wheel, package):
    """colcon (ament_python) installs setup.py's data_files under the install prefix: the wheel's
    .data/data/ tree is that layout. The launch file, the node's params file and the ament index
    marker (without which `ros2 run`/`ros2 launch` cannot find the package) must be there."""
    source, contents = wheel
    data = f'{PACKAGE}-{package.version}.data/data/'
    installed = {name[len(data):] for name in contents if name.startswith(data)}
    expected = {
        f'share/ament_index/resource_index/packages/{PACKAGE}',
        f'share/{PACKAGE}/package.xml',
        f'share/{PACKAGE}/launch/cost_map.launch.py',
        f'share/{PACKAGE}/config/cost_map.yaml',
        f'share/{PACKAGE}/config/patch_cost.yaml',
    }
    assert expected <= installed, expected - installed
    # and every launch file and config of the checkout, nothing else
    for pattern in ('launch/*.launch.py', 'config/*.yaml', 'config/*.rviz',
                    'config/train/*.yaml'):
        expected |= {f'share/{PACKAGE}/{p.relative_to(source).as_posix()}'
                     for p in source.glob(pattern)}
    assert installed == expected, installed ^ expected
    marker = contents[f'{data}share/ament_index/resource_index/packages/{PACKAGE}']
    assert marker == (REPO / 'resource' / PACKAGE).read_bytes()


# --- The README's commands for a robot --------------------------------------------------------

README = REPO / 'README.md'
ROS2_RUN = re.compile(rf'ros2\s+run\s+{PACKAGE}\s+([\w-]+)')


def test_setup_py_console_scripts():
    assert console_scripts() == CONSOLE_SCRIPTS  # setup.py read with ast (test_install_robot)


def test_readme_ros2_run_lines_name_console_scripts():
    """ament_python installs console scripts as lib/<package>/<name>, and `ros2 run <package>
    <name>` runs exactly that file: every name the README runs must be a console script, and
    every console script must be shown in its `ros2 run` form (after colcon they are not on
    PATH)."""
    names = ROS2_RUN.findall(README.read_text())
    assert names, 'the README shows no `ros2 run contrast_semask_ros ...` line'
    unknown = sorted(set(names) - set(CONSOLE_SCRIPTS))
    assert not unknown, f'`ros2 run` names that are not console scripts: {unknown}'
    not_shown = sorted(set(CONSOLE_SCRIPTS) - set(names))
    assert not not_shown, f'console scripts without a `ros2 run` form in the README: {not_shown}'


def test_readme_bare_commands_are_console_scripts():
    commands = set(re.findall(r'(?<![\w/-])(contrast-semask-[a-z]+(?:-[a-z]+)*)',
                              README.read_text()))
    assert commands and commands <= set(CONSOLE_SCRIPTS), commands - set(CONSOLE_SCRIPTS)


def _ros_args_examples(text: str) -> list[str]:
    """Each `ros2 run <package> <name> --ros-args ...` of the README on one line: up to the end
    of its inline code span, its code block, a blank line or the next `ros2 run|launch`."""
    examples = []
    for match in re.finditer(rf'ros2\s+run\s+{PACKAGE}\s+[\w-]+\s+--ros-args', text):
        rest = text[match.start():]
        following = re.search(r'\bros2\s+(?:run|launch)\s', rest[4:])
        end = min(i for i in (rest.find('`'), rest.find('\n\n'), len(rest),
                              following.start() + 4 if following else -1) if i >= 0)
        examples.append(' '.join(rest[:end].replace('\\\n', ' ').split()))
    return examples


def test_readme_ros2_run_examples_put_the_params_file_first():
    """A later --params-file overrides earlier -p values: --params-file must come first, and
    name the installed share file, not a path of the source tree."""
    examples = _ros_args_examples(README.read_text())
    assert len(examples) >= 2, 'no `ros2 run ... --ros-args` example in the README'
    share = f'$(ros2 pkg prefix {PACKAGE})/share/{PACKAGE}/'
    for example in examples:
        assert '--params-file' in example, example
        if ' -p ' in example:
            assert example.index('--params-file') < example.index(' -p '), example
        for match in re.finditer(r'--params-file\s+("[^"]*"|\S+)', example):
            assert match.group(1).strip('"').startswith(share), example


def test_bench_scripts_the_readme_runs_are_executable():
    """The README runs bench scripts directly (`bench/bench_backends.py --device cuda ...`):
    each needs a shebang and the execute bit (git records the mode, so a clone has it)."""
    named = set(re.findall(r'bench/[\w-]+\.py', README.read_text()))
    assert named, 'the README names no bench script'
    for script in sorted(named | {p.relative_to(REPO).as_posix()
                                  for p in (REPO / 'bench').glob('*.py')}):
        path = REPO / script
        assert path.is_file(), f'the README names {script}, which does not exist'
        assert path.read_text().startswith('#!/usr/bin/env python3\n'), f'{script}: no shebang'
        assert path.stat().st_mode & 0o111 == 0o111, f'{script} is not executable (chmod +x)'

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

REPO = Path(__file__).resolve().parents[1]
PACKAGE = 'contrast_semask_ros'
TOP_LEVEL_PACKAGES = ('contrast_semask_ros', 'contrast_semask_train')
CONSOLE_SCRIPTS = {
    'contrast-semask-convert': 'contrast_semask_train.convert_checkpoint:main',
    'contrast-semask-data': 'contrast_semask_train.data.cli:main',
    'contrast-semask-train': 'contrast_semask_train.train:main',
    'contrast-semask-eval': 'contrast_semask_train.evaluate:main',
    'contrast-semask-export': 'contrast_semask_train.export:main',
    'contrast-semask-replay': 'contrast_semask_ros.replay:main',
    'cost_map_node': 'contrast_semask_ros.node:main',
    'cost_map_lifecycle_node': 'contrast_semask_ros.lifecycle_node:main',
}

REQUIRED_EXEC_DEPENDS = {
    'rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'std_srvs', 'launch', 'launch_ros',
    'python3-numpy', 'python3-opencv',
}
REQUIRED_TEST_DEPENDS = {'ament_copyright', 'ament_flake8', 'ament_pep257', 'python3-pytest'}
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


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    """Build the wheel from a clean copy of the checkout (no stale build/ or egg-info)."""
    source = tmp_path_factory.mktemp('source')
    for relative in _checkout_files():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, source / relative)
    out = tmp_path_factory.mktemp('wheel')
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
         '--disable-pip-version-check', '-w', str(out), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f'pip wheel failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    wheels = list(out.glob('*.whl'))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as archive:
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
    for pattern in ('launch/*.launch.py', 'config/*.yaml', 'config/train/*.yaml'):
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

"""Every fenced block of README.md says how it is checked (issue 14), on the line before it:

    <!-- checked: test/test_xxx.py::test_name, ... -->   tests that run it; `ci` = `make test`
    <!-- needs: ros, gpu, tensorrt, dataset, network --> what it needs that is not here
    <!-- illustration -->                                 not a command (a layout, an output)

A `checked:` test must exist: the file, and a test function in it (found with ast).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.static

REPO = Path(__file__).resolve().parents[1]
NEEDS = ('ros', 'gpu', 'tensorrt', 'dataset', 'network')
MARKER = re.compile(r'^<!--\s*(.*?)\s*-->$')
MARKER_WORD = re.compile(r'^<!--\s*(checked|needs|illustration)\b')


def defined_tests(path: Path) -> set[str]:
    """`name` of every module-level test function and `Class::name` of every test method."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith('Test'):
            names.update(f'{node.name}::{f.name}' for f in node.body
                         if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return {n for n in names if n.split('::')[-1].startswith('test')}


def marker_problems(marker: str, repo: Path) -> list[str]:
    """What is wrong with the text inside one `<!-- ... -->` (nothing when it is valid)."""
    if marker == 'illustration':
        return []
    kind, sep, rest = marker.partition(':')
    items = [item.strip() for item in rest.split(',')]
    if not sep or kind not in ('checked', 'needs') or not all(items):
        return [f'unknown marker form {marker!r}']
    if len(set(items)) != len(items):
        return [f'repeated item in {marker!r}']
    if kind == 'needs':
        return [f'unknown need {item!r} (one of {", ".join(NEEDS)})'
                for item in items if item not in NEEDS]
    problems = []
    for item in items:
        if item == 'ci':
            continue
        file, sep, name = item.partition('::')
        path = repo / file
        if not sep or not re.fullmatch(r'test/test_\w+\.py', file) or not name:
            problems.append(f'{item!r} is not test/test_<name>.py::<test> or ci')
        elif not path.is_file():
            problems.append(f'{item!r}: no file {file}')
        elif name not in defined_tests(path):
            problems.append(f'{item!r}: no test {name} in {file}')
    return problems


def readme_problems(text: str, repo: Path = REPO) -> list[str]:
    """Every fenced block without a valid marker on the line just before it, and every marker
    that stands before no block."""
    problems: list[str] = []
    lines = text.splitlines()
    inside = False
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith('```'):
            if not inside:
                before = lines[number - 2].strip() if number > 1 else ''
                match = MARKER.match(before)
                if not match:
                    problems.append(f'README.md:{number}: block without a marker on the line '
                                    'before it')
                else:
                    problems += [f'README.md:{number - 1}: {p}'
                                 for p in marker_problems(match.group(1), repo)]
            inside = not inside
        elif not inside and MARKER_WORD.match(line.strip()):
            following = lines[number].lstrip() if number < len(lines) else ''
            if not following.startswith('```'):
                problems.append(f'README.md:{number}: marker before no block')
    if inside:
        problems.append('README.md: a block is not closed')
    return problems


def test_every_readme_block_is_marked_and_its_tests_exist() -> None:
    problems = readme_problems((REPO / 'README.md').read_text())
    assert not problems, '\n'.join(problems)


def test_the_check_catches_what_it_should(tmp_path: Path) -> None:
    (tmp_path / 'test').mkdir()
    (tmp_path / 'test/test_a.py').write_text(
        'def test_one():\n    pass\n\n\ndef helper():\n    pass\n\n\n'
        'class TestB:\n    def test_two(self):\n        pass\n')
    fence = '```'

    def problems(marker: str) -> list[str]:
        return readme_problems(f'text\n{marker}\n{fence}\nmake x\n{fence}\n', tmp_path)

    assert problems('<!-- checked: test/test_a.py::test_one, ci -->') == []
    assert problems('<!-- checked: test/test_a.py::TestB::test_two -->') == []
    assert problems('<!-- needs: ros, gpu -->') == []
    assert problems('<!-- illustration -->') == []
    assert 'without a marker' in problems('')[0]
    assert 'without a marker' in problems('plain text before it')[0]
    assert 'unknown marker form' in problems('<!-- tested -->')[0]
    assert 'unknown marker form' in problems('<!-- checked: -->')[0]
    assert 'unknown need' in problems('<!-- needs: ros, cloud -->')[0]
    assert 'no file' in problems('<!-- checked: test/test_c.py::test_one -->')[0]
    assert 'no test helper' in problems('<!-- checked: test/test_a.py::helper -->')[0]
    assert 'no test test_three' in problems('<!-- checked: test/test_a.py::test_three -->')[0]
    assert 'is not test/' in problems('<!-- checked: test/test_a.py -->')[0]
    assert 'repeated' in problems('<!-- needs: gpu, gpu -->')[0]
    stray = readme_problems('<!-- needs: ros -->\n\ntext\n', tmp_path)
    assert stray == ['README.md:1: marker before no block']

"""The architecture the layout promises, checked: which stage may import what, and no import hidden in a
function without a reason.

The repository keeps each stage in its own top-level folder, mapped into the one import package ``grukit`` by
pyproject.toml; import-linter reads a package from one directory tree, so the test assembles that tree as the
wheel would (Python files only) and runs ``lint-imports`` on it with the contract in pyproject.toml.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def _package_dirs() -> dict[str, Path]:
    """Each package of pyproject.toml's [tool.setuptools] -> the repository directory holding it."""
    cfg = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    dirs = {}
    for package in cfg["packages"]:
        parts = package.split(".")
        for i in range(len(parts), 0, -1):  # the longest mapped prefix
            prefix = ".".join(parts[:i])
            if prefix in mapping:
                dirs[package] = ROOT / mapping[prefix] / Path(*parts[i:])
                break
    return dirs


def test_import_contract_holds(tmp_path):
    for package, source in _package_dirs().items():
        target = tmp_path / Path(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for path in source.glob("*.py"):
            shutil.copy(path, target / path.name)
    lint = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([str(lint), str(PYPROJECT), "--no-cache"], cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, f"import contract broken:\n{done.stdout[-4000:]}{done.stderr[-2000:]}"
    assert "1 kept, 0 broken" in done.stdout, done.stdout


def _imports_inside_functions(path: Path) -> list[tuple[int, str]]:
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    line, above = lines[sub.lineno - 1], lines[sub.lineno - 2].strip()
                    if "#" not in line and not above.startswith("#"):
                        found.append((sub.lineno, line.strip()))
    return found


def test_every_function_level_import_says_why():
    """An import inside a function carries a one-line reason (on its line or the line above): an optional
    dependency, a per-command CLI import, a cost at import time. Never a cycle in disguise."""
    unexplained = [f"{path.relative_to(ROOT)}:{lineno}: {line}"
                   for source in _package_dirs().values() for path in sorted(source.glob("*.py"))
                   for lineno, line in _imports_inside_functions(path)]
    assert not unexplained, "function-level imports without a reason:\n" + "\n".join(unexplained)

"""Every third-party module the code imports is a declared dependency of the project."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]


def _normalized(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalized(re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0])


def declared(*extras: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return {_requirement_name(r) for r in requirements}


def imported_modules(folder: Path) -> dict[str, list[str]]:
    """Top-level names of the absolute imports under ``folder`` -> the files importing them."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(path.name)
    return found


def undeclared(folder: Path, allowed: set[str], local: set[str]) -> dict[str, str]:
    distributions = importlib.metadata.packages_distributions()
    problems = {}
    for module, files in imported_modules(folder).items():
        if module in sys.stdlib_module_names or module in local:
            continue
        owners = {_normalized(d) for d in distributions.get(module, [])}
        if not owners:
            problems[module] = f"not installed by any distribution (imported in {files[0]})"
        elif not owners & allowed:
            problems[module] = (
                f"comes from {sorted(owners)}, which pyproject.toml does not declare "
                f"(imported in {files[0]})"
            )
    return problems


def test_library_imports_only_declared_dependencies():
    assert undeclared(ROOT / "src", declared(), {"svblur"}) == {}


def test_tests_import_only_declared_dependencies():
    assert undeclared(ROOT / "tests", declared("dev"), {"svblur", "tests"}) == {}


def test_the_check_catches_an_undeclared_import(tmp_path):
    (tmp_path / "module.py").write_text("import cv2\nfrom PIL import Image\nimport json\n")
    without_opencv = declared() - {"opencv-python-headless"}
    problems = undeclared(tmp_path, without_opencv, set())
    assert set(problems) == {"cv2"}
    assert "opencv-python-headless" in problems["cv2"]

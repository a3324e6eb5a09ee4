"""The wheel ships every package, the demo data, the question set and every task file (pyproject stays in step)."""

import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def test_every_python_package_is_listed():
    found = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "afp_cli").rglob("__init__.py")}
    assert found | {"afp_cli.tasks"} == set(SETUPTOOLS["packages"])


def test_every_task_file_is_shipped_as_package_data():
    patterns = SETUPTOOLS["package-data"]["afp_cli.tasks"]
    tasks = ROOT / SETUPTOOLS["package-dir"]["afp_cli.tasks"]
    files = [
        path.relative_to(tasks).as_posix()
        for path in tasks.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert len(files) > 100
    missing = [
        name
        for name in files
        if not any(fnmatch.fnmatch(name, pattern) and name.count("/") == pattern.count("/") for pattern in patterns)
    ]
    assert missing == []


def test_package_data_files_exist():
    for pattern in SETUPTOOLS["package-data"]["afp_cli"]:
        assert list((ROOT / "afp_cli").glob(pattern)), pattern


def test_every_data_file_of_the_package_is_shipped():
    patterns = SETUPTOOLS["package-data"]["afp_cli"]
    root = ROOT / "afp_cli"
    data_files = [
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    ]
    missing = [
        name
        for name in data_files
        if not any(fnmatch.fnmatch(name, pattern) and name.count("/") == pattern.count("/") for pattern in patterns)
    ]
    assert missing == []

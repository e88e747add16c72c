"""The distribution installs one namespace, ``rts``, holding every module of the source folders."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"tasks": "rts/tasks", "models": "rts/models", "attacks": "rts/attacks"}
FOLDERS |= {"search": "rts/search", "cli": "rts/cli", "rts": "rts"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from this checkout as `pip install` builds it (an isolated build
    environment with pyproject's build requirements); leaves no build/ behind."""
    out = tmp_path_factory.mktemp("wheel")
    had_build = (ROOT / "build").exists()
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q"]
    try:
        subprocess.run([*cmd, "-w", str(out), str(ROOT)], check=True, capture_output=True)
    finally:
        if not had_build:
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    (path,) = out.glob("*.whl")
    return path


@pytest.fixture(scope="module")
def wheel_files(wheel) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


@pytest.mark.slow
def test_wheel_has_rts_and_nothing_else_at_top_level(wheel_files):
    top = {name.split("/")[0] for name in wheel_files}
    assert {t for t in top if not t.endswith(".dist-info")} == {"rts"}


@pytest.mark.slow
def test_wheel_holds_every_source_module(wheel_files):
    """A subpackage folder missing from pyproject's ``packages`` list would silently vanish."""
    expected = set()
    for folder, target in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            expected.add(f"{target}/{path.relative_to(ROOT / folder).as_posix()}")
    assert expected - wheel_files == set()


def test_python_dash_m_rts_runs_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "rts", "--version"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.startswith("rts ")


def test_rts_imports_from_any_folder_even_one_with_its_own_models_package(tmp_path):
    """A user's research folder usually has ``models/``: ours must not clash with it."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("USER = True\n")
    code = "import models, rts.models, rts.cli; print(models.USER, rts.models.build_model.__name__)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert proc.stdout.split() == ["True", "build_model"]


@pytest.mark.slow
def test_the_installed_wheel_imports_and_runs(wheel, tmp_path):
    """Installed from the wheel (not the editable checkout), every layer imports."""
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    subprocess.run([*pip, "--target", str(target), str(wheel)], check=True, capture_output=True)
    code = (
        "import rts.cli, rts.search.report.html, rts.search.results.pipeline, rts.attacks; "
        "print(rts.attacks.__file__)"
    )
    env = {"PYTHONPATH": str(target), "PATH": ""}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().startswith(str(target))

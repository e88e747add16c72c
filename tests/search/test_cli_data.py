"""``rts data synth|check|show``: outputs, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rts.cli import main
from tests.tasks.test_loader import write_taskonomy


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "data"
    write_taskonomy(root)
    return root


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rts: error: "), err
    return err[0]


def test_check_ok_prints_a_summary(folder, capsys):
    assert main(["data", "check", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "5 views in 2 buildings" in out and out.strip().endswith("ok")
    assert "depth_zbuffer" in out and "25.0% invalid" in out  # the left quarter has no surface


def test_check_broken_folder_exits_2_naming_the_file(tmp_path, capsys):
    root = tmp_path / "data"
    write_taskonomy(root)
    victim = root / "normal/b2/point_2_view_0_domain_normal.png"
    victim.unlink()
    assert main(["data", "check", str(root), "--tasks", "s,n"]) == 2
    line = _one_error_line(capsys)
    assert f"missing label file for task 'n': {victim}" in line
    assert main(["data", "check", str(root), "--tasks", "sd"]) == 0  # normals not asked for


def test_show_writes_a_grid_image(folder, tmp_path, capsys):
    out = tmp_path / "sample.png"
    assert main(["data", "show", str(folder), "--index", "1", "--out", str(out)]) == 0
    assert "b1/point_0_view_1" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 600 and im.height > 400
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 20  # not a blank canvas
    assert [p.name for p in tmp_path.iterdir()] == ["sample.png"]  # atomic: no temp files left


def test_show_selected_tasks_resized(folder, tmp_path, capsys):
    out = tmp_path / "s.png"
    args = ["data", "show", str(folder), "--out", str(out), "--size", "16", "--tasks", "dn"]
    assert main(args) == 0
    assert "tasks dn, 16x16 px" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["synth", "--out", "{tmp}/s", "--n", "0"], "n must be an integer >= 1, got n=0"),
        (["synth", "--out", "{tmp}/s", "--size", "0"], "size must be an integer in"),
        (["check", "{data}", "--tasks", "sx"], "unknown task 'x'; choose from"),
        (["check", "{tmp}/nope"], "data folder not found: "),
        (["show", "{tmp}/nope"], "data folder not found: "),
        (["show", "{data}", "--index", "99"], "index 99 out of range; "),
        (["show", "{data}", "--size", "0", "--out", "{tmp}/a.png"], "size must be in [8, 4096]"),
        (["check", "{data}", "--convention", "mao"], "unknown convention 'mao'"),
    ],
)
def test_bad_values_exit_2_with_one_line(folder, tmp_path, capsys, args, message):
    argv = ["data", *(a.format(tmp=tmp_path, data=folder) for a in args)]
    assert main(argv) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "s").exists()


def test_synth_check_show_round_trip(tmp_path, capsys):
    pytest.importorskip("rts.tasks.synthetic")
    out = tmp_path / "synth"
    assert (
        main(["data", "synth", "--out", str(out), "--n", "4", "--size", "16", "--seed", "3"]) == 0
    )
    assert "wrote 4 synthetic views at 16x16 px (seed 3)" in capsys.readouterr().out
    assert len(list((out / "rgb").rglob("*.png"))) == 4
    assert main(["data", "check", str(out)]) == 0
    assert "4 views in 2 buildings" in capsys.readouterr().out
    assert main(["data", "show", str(out), "--index", "3", "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").stat().st_size > 10_000


def test_console_script_reports_bad_input_in_one_line(folder):
    rts = Path(sys.executable).with_name("rts")
    cmd = [str(rts)] if rts.exists() else [sys.executable, "-m", "rts"]
    bad = subprocess.run(
        [*cmd, "data", "check", str(folder), "--tasks", "q"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("rts: error: unknown task 'q'")
    assert len(bad.stderr.strip().splitlines()) == 1 and bad.stdout == ""

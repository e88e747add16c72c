"""``rts search CONFIG --dry-run`` plans every config without its data; a run still needs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from rts.cli import main
from rts.search.config.convert import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def _source(path: Path) -> str:
    return load_config(path, check=False).data.source


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_plans_without_its_data(path, tmp_path, capsys):
    rc = main(["search", str(path), "--dry-run", "--storage", str(tmp_path)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "estimated trials:" in captured.out and "H100-hours of training" in captured.out
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
    source = _source(path)
    if source != "synthetic" and not Path(source).is_dir():
        lines = captured.err.splitlines()
        assert lines == [
            f"rts: warning: data.source: {source!r} is neither 'synthetic' nor an existing "
            "folder; the plan needs no data, a run does"
        ]
    else:
        assert captured.err == ""


def test_a_run_without_the_data_still_exits_2(tmp_path, capsys):
    real = [p for p in CONFIGS if _source(p) != "synthetic"]
    assert real  # the paper's studies point at a Taskonomy folder
    missing = tmp_path / "no-taskonomy"
    rc = main(["search", str(real[0]), f"data.source={missing}", "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == (
        f"rts: error: data.source: '{missing}' is neither 'synthetic' nor an existing folder\n"
    )
    assert not any(p for p in tmp_path.iterdir() if p != missing)  # nothing was started


def test_gpu_hours_scale_with_units_images_and_pixels():
    from rts.search.engine.plan import GPU_IMAGES_PER_S, gpu_hours, plan_search

    cfg = load_config(None, ["data.n=1000", "data.size=128", "data.val_fraction=0.2"])
    plan = plan_search(cfg)
    expected = plan.units_expected * 800 * 0.25 / GPU_IMAGES_PER_S / 3600
    assert gpu_hours(cfg, plan) == pytest.approx(expected)


def test_a_fixed_design_says_so_instead_of_batches_or_asha(tmp_path, capsys):
    """The default stage 1 is a design (no sampler, no pruning): the plan and the summary must
    not promise batches and rung barriers."""
    from rts.search.engine.plan import mode_name, mode_text

    assert mode_name(True, "pairs") == mode_name(False, "triples") == "design"
    assert mode_name(True) == "deterministic" and mode_name(False) == "asynchronous"
    assert mode_text("design").startswith("fixed design (stage 1 trains a fixed set")
    assert main(["search", "configs/quickstart.yaml", "--dry-run", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mode: fixed design" in out and "batches of" not in out

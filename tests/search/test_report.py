"""``rts report``: a self-contained report.html (checked in headless Chromium) and summary.md."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rts.cli import main
from rts.search.analysis.correlate import analyze
from rts.search.analysis.rundata import make_run_data
from rts.search.report.html import write_report
from tests.search.test_analysis import fake_frames, fake_run, write_fake_run_folder

EXPECTED_FIGURES = {
    "heatmap-pgd",
    "heatmap-apgd",
    "heatmap-wgd",
    "heatmap-fgsm",
    "chains",
    "pareto",
    "scatter",
    "history",
}
IMG = re.compile(r'<img id="([^"]+)" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One report of the fake exhaustive run, shared by the tests of this module."""
    out = tmp_path_factory.mktemp("report")
    trials, attacks, history = fake_frames()
    config = {"name": "fake", "notes": "<script>alert(1)</script>", "search": {"main": "d"}}
    run = make_run_data(trials, attacks, history, config=config, path=out / "fake-run")
    paths = write_report(run, out, n_resamples=49)
    return paths, paths["html"].read_text(encoding="utf-8")


def test_report_contains_every_figure_it_names(report):
    paths, html = report
    images = dict(IMG.findall(html))
    assert set(images) == EXPECTED_FIGURES
    for fid, data in images.items():
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert Image.open(io.BytesIO(png)).size[0] > 300
        assert (paths["figures"] / f"{fid}.png").read_bytes() == png  # same image on disk
        assert f'id="figure-{fid}"' in html and "<figcaption>" in html
    assert html.count("<img ") == len(EXPECTED_FIGURES)
    # no chain measured: Definition 3 is one line saying how to measure it, no empty frame
    assert 'id="figure-definition3"' in html and 'id="definition3"' not in html
    assert "No stage-2 model with two or more tasks: nothing to measure it on." in html


def test_report_reads_in_order_and_is_self_contained(report):
    _, html = report
    order = [
        'id="recommendation"',
        'id="surrogates"',
        "<figure",
        'id="combinations"',
        'id="compute"',
        'id="config"',
    ]
    positions = [html.index(s) for s in order]
    assert positions == sorted(positions)
    assert "Most robust combination found: <strong>dn</strong>" in html
    for anchor in re.findall(r'href="#([^"]+)"', html):
        assert f'id="{anchor}"' in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from a network
    assert "<script" not in html and "<link" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # config values are escaped
    for surrogate in ("vuln@1", "vuln@3", "clean_error", "grad_bound@0"):
        assert f"<td>{surrogate}</td>" in html


def test_summary_markdown_links_every_figure(report):
    paths, _ = report
    md = paths["markdown"].read_text(encoding="utf-8")
    assert md.startswith("# Robust task search: fake-run")
    assert md.index("## Recommendation") < md.index("## Surrogates vs target")
    for fid in EXPECTED_FIGURES:
        assert f"(figures/{fid}.png)" in md
    assert "| Pearson r" in md and "| vuln@3" in md
    assert "```yaml" in md


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not on PATH (Debian package `chromium`; .ci/run installs it)",
)
def test_report_renders_in_headless_chromium(report, tmp_path):
    paths, _ = report
    shot = tmp_path / "shot.png"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-quic",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        paths["html"].resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape == (2000, 1280, 3)
    assert img.std() > 20  # not a blank page
    colours = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text antialiasing, tables, the coloured boxes
    top = img[:600]
    assert top.std() > 10  # the recommendation is rendered at the top
    # the recommendation box's CSS background (#eef7ee) is there: the inline styles applied
    assert np.any(np.all(np.abs(top - [0xEE, 0xF7, 0xEE]) <= 2, axis=-1))


def test_cli_report_default_folder(tmp_path, capsys):
    root = write_fake_run_folder(tmp_path / "run")
    assert main(["report", str(root), "--resamples", "19"]) == 0
    out = capsys.readouterr().out
    assert f"report: {root / 'report' / 'report.html'}" in out
    html = (root / "report" / "report.html").read_text(encoding="utf-8")
    assert "Robust task search: run" in html
    assert (root / "report" / "summary.md").is_file()


def test_report_without_targets_or_trials_still_writes(tmp_path):
    trials, _, history = fake_frames()
    no_target = make_run_data(trials, None, history)
    paths = write_report(no_target, tmp_path / "a", n_resamples=9)
    html = paths["html"].read_text(encoding="utf-8")
    assert "No stage-2 model was fully trained and attacked" in html
    assert "no target to correlate with" in html
    empty = make_run_data(pd.DataFrame({"trial_id": [], "tasks": []}))
    paths = write_report(empty, tmp_path / "b", n_resamples=9)
    html = paths["html"].read_text(encoding="utf-8")
    assert "nothing to recommend" in html
    drawn = dict(IMG.findall(html))
    for fid in ("heatmap", "chains", "definition3"):  # no data: one line, no empty frame
        assert f'id="figure-{fid}"' in html and fid not in drawn


def test_report_accepts_a_precomputed_table(tmp_path):
    run = fake_run()
    table = analyze(run, surrogates=["vuln@3"], n_resamples=9)
    html = write_report(run, tmp_path, table=table)["html"].read_text(encoding="utf-8")
    assert "<td>vuln@3</td>" in html and "<td>vuln@1</td>" not in html


def _rec(skill: float, baseline_skill: float = 0.7) -> dict:
    return {
        "status": "target",
        "combo": "dD",
        "tasks": "dD",
        "main": "d",
        "weights": "uniform",
        "encoder": "resnet18",
        "target": 0.2,
        "target_attack": "worst",
        "clean_error": 0.01,
        "n": 3,
        "baseline": 0.4,
        "change": -0.5,
        "skill": skill,
        "baseline_skill": baseline_skill,
        "surrogate": None,
    }


def test_recommendation_of_a_model_without_skill_opens_with_not_trusted():
    from rts.search.report.html import recommendation_lines

    lines = recommendation_lines(_rec(-0.4), pd.DataFrame())
    assert lines[0].startswith("**Not trusted**") and "skill -0.40" in lines[0]
    good = recommendation_lines(_rec(0.62), pd.DataFrame())
    assert good[0].startswith("Most robust combination found")
    assert any("Main-task skill" in line and "0.62" in line and "0.7" in line for line in good)

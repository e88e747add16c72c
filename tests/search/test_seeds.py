"""``stage2.seeds``: every finalist and the baseline under K training seeds, one row per seed,
the candidates' means with intervals that rest on the seeds, the recommendation by the mean."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rts.search.config.convert import load_config
from rts.search.results.candidates import per_candidate, pooled_images
from rts.search.results.pipeline import run_search
from tests.search.fake_trial import FakeTrial
from tests.search.tiny import TINY_FAKE_GRID, TINY_REAL_SEARCH

ray = pytest.importorskip("ray")

FAKE = [*TINY_FAKE_GRID, "stage2.top_k=3", "search.seed=5"]


def test_per_candidate_means_over_seeds_and_pools_units():
    done = pd.DataFrame(
        {
            "trial_id": ["s2-0001", "s2-0002", "s2-0003", "s2-0004"],
            "main": "d",
            "aux": ["", "", "s", "s"],
            "weights": ['{"d": 1.0}'] * 2 + ['{"d": 1.0, "s": 1.0}'] * 2,
            "encoder": "resnet18",
            "seed": [0, 1, 0, 1],
            "vuln": [1.0, 3.0, 0.5, 0.7],
            "skill": [0.6, 0.4, 0.7, 0.5],
        }
    )
    c = per_candidate(done).set_index("aux")
    assert c.loc["", "vuln"] == 2.0 and c.loc["s", "vuln"] == pytest.approx(0.6)
    assert c.loc["", "trial_ids"] == "s2-0001,s2-0002" and c.loc["", "trial_id"] == "s2-0001"
    assert c.loc["", "seed_sd"] == pytest.approx(math.sqrt(2.0))  # sd of (1, 3)
    assert c.loc["s", "skill_min"] == 0.5 and (c["n_seeds"] == 2).all()
    images = pd.DataFrame(
        {
            "trial_id": ["s2-0001", "s2-0002", "s2-0004", "s2-0004"],
            "attack": ["worst", "worst", "worst", "pgd"],
            "image": [7, 7, 7, 7],
            "clean_error": 1.0,
            "adv_error": 2.0,
        }
    )
    pooled = pooled_images(images, done, "worst")
    # the same image under two seeds is two units (seed, image); both seeds of a candidate
    # share its key, and the seed is a column of its own: the seeds are clusters
    assert pooled["key"].tolist() == ["s2-0001", "s2-0001", "s2-0003"]
    assert pooled["seed"].tolist() == [0, 1, 1] and pooled["unit"].tolist() == [7, 7, 7]


def test_stage2_seeds_end_to_end_on_fake_trials(local_ray, tmp_path):
    cfg = load_config(None, ["name=seeds", *FAKE, "stage2.seeds=3"])
    out = run_search(cfg, storage=tmp_path, trial_fn=FakeTrial(seed_noise=0.3))
    s2 = out.trials[out.trials["stage"] == 2]
    # 3 finalists + the baseline, 3 seeds each: the search's trial seed 5, then 6 and 7
    assert len(s2) == 12 and (s2["status"] == "completed").all()
    assert sorted(s2.groupby("aux")["seed"].apply(sorted).tolist()) == [[5, 6, 7]] * 4
    assert (out.trials[out.trials["stage"] == 1]["seed"] == 5).all()
    # the seed noise makes the seeds differ; the candidate's value is their mean
    assert s2.groupby("aux")["vuln"].nunique().eq(3).all()
    cands = pd.read_parquet(out.paths.candidates)
    assert len(cands) == 4 and (cands["n_seeds"] == 3).all()
    means = s2.groupby("aux")["vuln"].mean()
    for _, row in cands.iterrows():
        assert row["vuln"] == pytest.approx(means[row["aux"]])
        assert row["vuln_low"] <= row["vuln"] <= row["vuln_high"]
    # the recommendation is the lowest mean over seeds, not the luckiest single seed
    s = out.summary
    assert s.recommended_aux == means.idxmin() and s.vuln == pytest.approx(means.min())
    assert s.seeds == 3 and s.vuln_low <= s.vuln <= s.vuln_high
    images = pd.read_parquet(out.paths.images)
    assert images["trial_id"].nunique() == 12
    text = out.paths.summary_md.read_text()
    assert "under 3 training seeds" in text
    # resuming the finished run reads everything back
    again = run_search(cfg, storage=tmp_path, trial_fn=FakeTrial(seed_noise=0.3))
    assert again.summary == s


def test_one_seed_keeps_the_trial_table_and_names_no_seed(local_ray, tmp_path):
    cfg = load_config(None, ["name=one", *FAKE])
    out = run_search(cfg, storage=tmp_path, trial_fn=FakeTrial())
    s2 = out.trials[out.trials["stage"] == 2]
    assert len(s2) == 4 and (s2["seed"] == 5).all()
    assert '"seed"' not in "".join(s2["params"])  # configs unchanged for a single seed
    cands = pd.read_parquet(out.paths.candidates)
    assert sorted(cands["trial_id"]) == sorted(s2["trial_id"])
    assert "training seeds" not in out.paths.summary_md.read_text()


@pytest.mark.slow
def test_stage2_seeds_on_real_tiny_trials(local_ray, tmp_path):
    """Real training: another seed is another initialisation and data order, so its numbers
    differ; the candidate table averages them."""
    overrides = ["name=real-seeds", *TINY_REAL_SEARCH, "stage2.seeds=2", "attack.ensemble=[pgd]"]
    cfg = load_config(None, overrides)
    out = run_search(cfg, storage=tmp_path)
    s2 = out.trials[out.trials["stage"] == 2]
    assert len(s2) == 4 and (s2["status"] == "completed").all(), s2["failure"].tolist()
    for _, g in s2.groupby("aux"):
        assert sorted(g["seed"]) == [0, 1]
        assert g["clean_error"].nunique() == 2  # the seeds trained different models
    cands = pd.read_parquet(out.paths.candidates)
    assert len(cands) == 2 and (cands["n_seeds"] == 2).all()
    for _, row in cands.iterrows():
        g = s2[s2["aux"] == row["aux"]]
        assert row["vuln"] == pytest.approx(g["vuln"].mean())
        assert row["clean_error"] == pytest.approx(g["clean_error"].mean())
    assert (out.paths.root / "checkpoints").is_dir()
    assert len(list((out.paths.root / "checkpoints").iterdir())) == 4

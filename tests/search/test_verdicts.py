"""The summary's verdicts on crafted runs whose answers are known by hand (issue 25): several
seeds, the recommendation's own statistic, the selection of the best of many, one attack, the
three outcomes and an unknown skill."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rts.search.results.recommend import compare
from rts.search.results.summary import format_summary, summarize
from tests.search.test_search_results import row, sp


def table(levels: dict[str, float], seeds: int = 1, skill: float = 0.6) -> pd.DataFrame:
    """Completed stage-2 trials: one candidate per aux set (``""`` = the baseline), ``seeds``
    trials each; ``vuln`` as the trial would report it is filled in by :func:`images`."""
    rows = []
    n = 0
    for aux, level in levels.items():
        for s in range(seeds):
            n += 1
            r = row(f"s2-{n:04d}", aux, level, epochs=10)
            r.update(stage=2, seed=s, skill=skill)
            rows.append(r)
    return pd.DataFrame(rows)


def images(
    trials: pd.DataFrame, ratio, attack="worst", n=60, statistic="mean", seed=0
) -> pd.DataFrame:
    """Per-image errors of every trial, ``ratio(trial row, rng) -> [n]`` the per-image relative
    increase; the trial's ``vuln`` becomes the statistic of its own rows, as in a real run."""
    from rts.attacks.statistics import get_statistic

    rng = np.random.default_rng(seed)
    clean = rng.uniform(0.1, 1.0, n)
    out = []
    for i, r in trials.iterrows():
        adv = clean * (1 + ratio(r, rng))
        trials.loc[i, "vuln"] = get_statistic(statistic)(clean, adv)
        out.append(
            pd.DataFrame(
                {
                    "trial_id": r["trial_id"],
                    "attack": attack,
                    "image": np.arange(n),
                    "clean_error": clean,
                    "adv_error": adv,
                }
            )
        )
    return pd.concat(out, ignore_index=True)


def summary(trials, imgs, statistic="mean", attacks=("pgd", "apgd"), aggregate="worst"):
    return summarize(
        trials.iloc[:0],
        trials,
        sp(),
        stage2_epochs=10,
        aggregate=aggregate,
        attacks=attacks,
        images=imgs,
        statistic=statistic,
    )


def inside(s) -> bool:
    return s.vuln_low <= s.vuln <= s.vuln_high and s.baseline_low <= s.baseline_vuln <= (
        s.baseline_high
    )


def test_equal_models_are_tied_and_the_verdict_says_so():
    trials = table({"": 0.5, "s": 0.5, "k": 0.5, "n": 0.5})
    s = summary(trials, images(trials, lambda r, rng: 0.5 + rng.normal(0, 0.3, 60)))
    assert s.verdict == "tied" and s.significant is False and inside(s)
    assert set(s.tied) == {"d", "d+s", "d+k", "d+n"}
    text = format_summary(s)
    assert "**Not significant**" in text and "family-wise error 5 % over the 4 models" in text
    assert "resting on 1 seed × 60 images" in text


def test_a_constant_difference_is_better_with_its_value_in_its_interval():
    trials = table({"": 0.5, "s": 0.4})
    s = summary(trials, images(trials, lambda r, rng: r["vuln"] + 0 * rng.random(60)))
    assert s.verdict == "better" and s.vs_baseline == pytest.approx((-0.1, -0.1, -0.1))
    assert inside(s) and s.tied == ("d+s",)
    assert "significantly more robust than the single-task model" in format_summary(s)


def test_a_seed_level_offset_is_not_a_difference_and_the_verdict_rests_on_the_seeds():
    """Two equal models, 3 seeds: each seed shifts all of a model's images (seed noise 0.05),
    the images barely vary. Pooling (seed, image) units called this significant."""
    offsets = iter([0.05, -0.05, 0.04, -0.04, 0.06, -0.05])
    trials = table({"": 0.5, "s": 0.5}, seeds=3)
    imgs = images(trials, lambda r, rng: 0.5 + next(offsets) + rng.normal(0, 0.02, 60))
    s = summary(trials, imgs)
    assert s.verdict == "tied" and (s.verdict_seeds, s.verdict_images) == (3, 60)
    assert inside(s)
    assert "resting on 3 seeds × 60 images" in format_summary(s)


def test_ratio_of_means_over_two_seeds_one_statistic_everywhere():
    """The issue's case: the recommendation's value is the mean of its seeds' statistics, the
    very number its interval and test are of; a baseline that is better on every seed is
    "worse" for the recommendation, never "not significant"."""
    trials = table({"": 0.30, "s": 0.46}, seeds=2)
    imgs = images(
        trials, lambda r, rng: r["vuln"] + rng.normal(0, 0.01, 60), statistic="ratio_of_means"
    )
    trials.loc[trials["aux"] == "s", "vuln"] -= 0.2  # the trials' table picks d+s ...
    s = summary(trials, imgs, statistic="ratio_of_means")
    assert s.recommended_aux == "s"
    assert s.vuln == pytest.approx(imgs_stat(imgs, trials, "s"))  # ... its rows say 0.46
    assert inside(s) and s.verdict == "worse" and s.vs_baseline[1] > 0
    text = format_summary(s)
    assert "**Worse**" in text and "significantly worse" in text and "within the noise" not in text


def imgs_stat(imgs, trials, aux):
    from rts.attacks.statistics import ratio_of_means

    ids = trials.loc[trials["aux"] == aux, "trial_id"]
    return np.mean(
        [
            ratio_of_means(g["clean_error"].to_numpy(), g["adv_error"].to_numpy())
            for t, g in imgs.groupby("trial_id")
            if t in set(ids)
        ]
    )


ERRORS = ("clean_error", "adv_error")
SELECTED = 16
"""A draw of 9 equal models where the best alone looks significantly better than the baseline."""


def test_the_best_of_eight_equal_candidates_is_not_declared_better():
    """Selection: the lowest of 8 equal candidates beats the baseline on these images by luck;
    the pairwise test, which ignored the selection, called it significant."""
    from rts.attacks.statistics import paired_difference

    levels = {"": 0.5, **{a: 0.5 for a in ["s", "k", "n", "D", "sk", "sn", "kn", "Dn"]}}
    trials = table(levels)
    imgs = images(trials, lambda r, rng: 0.5 + rng.normal(0, 0.3, 60), seed=SELECTED)
    frame = imgs.merge(trials[["trial_id", "aux"]]).rename(columns={"image": "unit"})
    frame["key"] = "d" + frame["aux"]
    best = "d" + trials.set_index("aux")["vuln"].idxmin()

    def errors(key: str) -> tuple:
        return tuple(frame.loc[frame["key"] == key, c].to_numpy() for c in ERRORS)

    lone = paired_difference(errors(best), errors("d"), "mean")
    comp = compare(frame, "mean", baseline="d")
    assert comp.best == best and lone[2] < 0  # alone, the luckiest looked significant
    assert comp.verdict == "tied" and len(comp.tied) == 9


def test_a_one_attack_ensemble_gets_intervals_and_a_verdict():
    trials = table({"": 0.5, "s": 0.3})
    imgs = images(trials, lambda r, rng: r["vuln"] + rng.normal(0, 0.05, 60), attack="pgd")
    s = summary(trials, imgs, attacks=("pgd",))
    assert s.verdict == "better" and inside(s)
    assert "[" in format_summary(s).split("recommended:")[1].splitlines()[0]


@pytest.mark.parametrize("statistic", ["mean", "ratio_of_means", "adv_error"])
def test_a_mean_aggregate_of_several_attacks_gets_its_own_value_an_interval_and_a_verdict(
    statistic,
):
    """``attack.aggregate: mean``: the vulnerability is the mean of the attacks' statistics; the
    verdict rests on per-image means over the attacks, whose statistic is that same value."""
    from rts.attacks.statistics import get_statistic

    trials = table({"": 0.5, "s": 0.3})
    pgd = images(trials, lambda r, rng: r["vuln"] + rng.normal(0, 0.05, 60), "pgd")  # same clean
    apgd = images(trials, lambda r, rng: 1.5 * r["vuln"] + rng.normal(0, 0.05, 60), "apgd")
    imgs = pd.concat([pgd, apgd], ignore_index=True)
    stat = get_statistic(statistic)
    for i, r in trials.iterrows():  # as the trial reports it: the mean over the attacks
        per = [
            stat(g["clean_error"].to_numpy(), g["adv_error"].to_numpy())
            for _, g in imgs[imgs["trial_id"] == r["trial_id"]].groupby("attack")
        ]
        trials.loc[i, "vuln"] = float(np.mean(per))
    s = summary(trials, imgs, statistic=statistic, aggregate="mean")
    assert s.verdict == "better" and inside(s)
    assert s.vuln == pytest.approx(trials.set_index("aux").loc["s", "vuln"])
    # the median of a mean is not the mean of medians: no verdict rather than a wrong one
    median = summary(trials, imgs, statistic="median", aggregate="mean")
    assert median.verdict in ("", None) or np.isnan(median.vuln_low)


def test_a_nan_skill_on_the_recommendation_is_not_trusted():
    trials = table({"": 0.5, "s": 0.3})
    trials.loc[trials["aux"] == "s", "skill"] = np.nan
    s = summary(trials, images(trials, lambda r, rng: r["vuln"] + rng.normal(0, 0.05, 60)))
    first = format_summary(s).splitlines()[2]
    assert first.startswith("**Not trusted**") and "skill unknown" in first

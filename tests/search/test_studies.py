"""The paper's research questions as configs: each loads, plans (``--dry-run``) and, for the
synthetic counterparts, runs end to end at tiny size (real models, attacks, Ray and Optuna).

The real configs point at a Taskonomy folder that CI does not have; their dry runs get
``data.source=<an existing folder>`` (a dry run reads no data).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

from rts.search.config.convert import load_config, resolve
from rts.search.config.studies import study_configs
from rts.search.engine.plan import plan_search

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STUDIES = {
    # name: configurations in the space (real config, synthetic counterpart)
    "rq1-tasks-norms-budgets": (64, 16),  # 16 subsets x 4 encoders; synthetic: ResNet18 only
    "rq2-marginal": (16, 1),  # synthetic: the 5-task model only (min_aux 4)
    "rq3-weights-adaptive": (8, 8),  # 4 pairs x {uniform, optimal}
    "rq4-surrogates": (16, 16),
}
SAME_QUESTION = (
    "search.main",
    "search.pool",
    "search.max_aux",
    "search.objective",
    "search.sampler",
    "search.deterministic",
    "weighting.schemes",
    "stage1.encoder",
    "stage1.scheduler",
    "stage1.design",
    "stage1.model",
    "stage2.uniform_twins",
    "attack.eps",
    "attack.norm",
    "attack.target",
    "attack.ensemble",
    "attack.aggregate",
)
"""What a synthetic counterpart must share with its real study (the rest is scale)."""
TOY = {"search.main", "search.pool", "stage1.encoder"}
"""Every toy asks its question of reshading (r, with s, d, n, E), the main task its models learn
at CPU budgets, on a truncated ResNet (``*_s8``): docs/synthetic.md, "Models that learn"."""
KNOWN_DIFFERENCES = {
    # toy: resnet18_s8 only (see its header), so stage 1 needs no per-trial encoder; the worst
    # case of PGD, APGD and WGD as in the search benchmark, whose ground truth it is (PGD's own
    # value is the vuln_pgd column)
    "rq1-tasks-norms-budgets": TOY | {"search.encoders", "attack.ensemble"},
    "rq2-marginal": TOY | {"search.min_aux"},  # toy: only the 5-task model of Figure 1
    "rq3-weights-adaptive": TOY,
    "rq4-surrogates": TOY,
}
TINY = [
    "data.n=32",  # 2 buildings: 16 training, 16 held-out images
    "data.size=32",
    "stage1.epochs=1",
    "stage2.epochs=1",
    "stage1.batch_size=8",
    "stage2.batch_size=8",
    "attack.images=2",
    "attack.steps=1",
    "attack.cheap_steps=1",
]


def path(name: str) -> Path:
    return CONFIGS / f"{name}.yaml"


def get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def all_configs() -> list[str]:
    return [n for s in STUDIES for n in (s, f"{s}-synthetic")]


def test_every_study_config_exists_and_no_other():
    found = {p.stem for p in CONFIGS.glob("rq*.yaml")}
    assert found == set(all_configs())


@pytest.mark.parametrize("name", all_configs())
def test_config_loads_and_passes_dry_run(name, tmp_path, capsys):
    from rts.cli import main

    synthetic = name.endswith("-synthetic")
    extra = [] if synthetic else [f"data.source={tmp_path}"]
    rc = main(["search", str(path(name)), *extra, "--dry-run", "--storage", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    expected = STUDIES[name.removesuffix("-synthetic")][1 if synthetic else 0]
    assert f"= {expected} configurations" in out
    assert f"results would go to {tmp_path}" in out
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


@pytest.mark.parametrize("name", list(STUDIES))
def test_real_configs_use_the_papers_settings(name):
    cfg = resolve(load_config(path(name), ["data.source=/"], check=False))
    assert cfg.data.size == 256  # MTRobust / Taskonomy resolution
    assert cfg.stage2.epochs == 150  # App. B
    assert cfg.attack.eps == pytest.approx(8 / 255)
    assert cfg.attack.norm == "linf"
    assert cfg.attack.steps == 25
    if name == "rq3-weights-adaptive":  # Tables 1-2: every main task of the five, in one run
        assert (cfg.search.main, cfg.pool) == (("s", "d", "D", "n", "E"), "sdDnE")
    else:
        assert (cfg.search.main, cfg.pool) == ("d", "sDnE")  # the paper's five tasks
    assert cfg.sampler == "grid"  # the paper trained every combination
    if cfg.attack.ensemble == ("pgd",):
        assert cfg.attack.step_size == pytest.approx(2 / 255)  # the paper's alpha
    else:  # one step size would override Auto-PGD's own (2 eps): left to each attack
        assert cfg.attack.step_size is None


def test_study_specific_settings():
    rq1 = load_config(path("rq1-tasks-norms-budgets"), ["data.source=/"], check=False)
    assert {"resnet18", "resnet50", "resnet152", "wide_resnet50_2"} == set(rq1.search.encoders)
    assert rq1.stage1.encoder == "same"
    rq2 = load_config(path("rq2-marginal"), ["data.source=/"], check=False)
    assert rq2.attack.target == "all" and rq2.weighting.schemes == ("uniform",)
    rq3 = load_config(path("rq3-weights-adaptive"), ["data.source=/"], check=False)
    assert (rq3.search.min_aux, rq3.search.max_aux) == (1, 1)
    assert rq3.weighting.schemes == ("uniform", "optimal")
    assert rq3.attack.ensemble == ("pgd", "apgd", "wgd") and rq3.attack.target == "main"
    rq4 = load_config(path("rq4-surrogates"), ["data.source=/"], check=False)
    assert (rq4.stage1.encoder, rq4.search.encoders) == ("resnet18", ("resnet50",))
    assert rq4.stage1.epochs == rq4.stage2.epochs == 150  # vuln@50 and the converged surrogate
    assert rq4.stage1.scheduler == "fifo"


@pytest.mark.parametrize("name", all_configs())
def test_exhaustive_studies_train_every_configuration_in_full(name):
    """top_k covers every multi-task configuration; the baseline covers the single-task one
    (in every study of a run of several main tasks)."""
    run = resolve(load_config(path(name), ["data.source=/"], check=False))
    for cfg in map(resolve, study_configs(run)):
        plan = plan_search(cfg)
        single = len(cfg.search.encoders) * len(cfg.weighting.schemes) * (cfg.search.min_aux == 0)
        assert cfg.stage2.top_k >= plan.configurations - single
        assert plan.stage1_trials == plan.configurations


@pytest.mark.parametrize("name", list(STUDIES))
def test_synthetic_counterpart_asks_the_same_question(name):
    real = resolve(load_config(path(name), ["data.source=/"], check=False))
    toy = resolve(load_config(path(f"{name}-synthetic")))
    assert toy.data.source == "synthetic"
    for key in SAME_QUESTION:
        if key in KNOWN_DIFFERENCES.get(name, set()):
            continue
        assert get(toy, key) == get(real, key), key
    for key in KNOWN_DIFFERENCES.get(name, set()):
        assert get(toy, key) != get(real, key), f"{key} is listed as a difference but is equal"
    # Budgets keep their proportions: the surrogate trains the full budget in RQ4 only.
    assert (toy.stage1.epochs == toy.stage2.epochs) == (real.stage1.epochs == real.stage2.epochs)


# --------------------------------------------------------------------------------------------
# The synthetic counterparts, end to end at tiny size


ray = pytest.importorskip("ray")


def run_tiny(name: str, tmp_path: Path, *overrides: str):
    from rts.search.results.pipeline import run_search

    cfg = load_config(path(f"{name}-synthetic"), [*TINY, *overrides])
    return run_search(cfg, storage=tmp_path)


def stage(out, n: int) -> pd.DataFrame:
    return out.trials[out.trials["stage"] == n]


@pytest.mark.slow
def test_rq1_synthetic_trains_and_attacks_every_subset(local_ray, tmp_path):
    out = run_tiny("rq1-tasks-norms-budgets", tmp_path, "search.pool=sD", "search.max_aux=2")
    s2 = stage(out, 2)
    subsets = {"".join(c) for n in range(3) for c in itertools.combinations("sD", n)}
    assert sorted(s2["aux"]) == sorted(subsets)
    assert sorted(stage(out, 1)["aux"]) == sorted(subsets)
    assert (s2["status"] == "completed").all() and s2["vuln"].notna().all()
    # vuln is the per-image worst case of the ensemble, on the main task
    att = out.attacks
    assert {"pgd", "apgd", "wgd", "worst"} <= set(att["attack"])
    for _, row in s2.iterrows():
        worst = att[
            (att["trial_id"] == row["trial_id"]) & (att["attack"] == "worst") & (att["task"] == "r")
        ]
        assert float(worst["relative_vulnerability"].iloc[0]) == pytest.approx(row["vuln"])
    best = s2.sort_values(["vuln", "clean_error"]).iloc[0]
    assert out.summary.recommended_aux == best["aux"]
    assert out.summary.exhaustive_configs == 4


@pytest.mark.slow
def test_rq2_synthetic_five_task_model_and_the_enabling_chain(local_ray, tmp_path):
    from rts.cli import main

    out = run_tiny("rq2-marginal", tmp_path)
    s2 = stage(out, 2).set_index("aux")
    assert set(s2.index) == {"sdnE", ""}
    ckpt = out.paths.root / s2.loc["sdnE", "checkpoint"]
    chain = ["r", "dr", "dnr", "dnEr", "sdnEr"]
    rc = main(
        [
            "attack",
            str(ckpt),
            "--attack",
            "pgd",
            "--steps",
            "1",
            "--n",
            "2",
            "--tasks",
            ",".join(chain),
            "--out",
            str(tmp_path / "chain"),
            "--no-progress",
        ]
    )
    assert rc == 0
    table = pd.read_parquet(tmp_path / "chain" / "attack.parquet")
    from rts.tasks.registry import canonical_tasks

    assert set(table["attacked"]) == {canonical_tasks(c) for c in chain}
    # Definition 1 per attacked set: one adversarial vulnerability per enabled set, so the
    # marginal vulnerability of each added task is the difference along the chain.
    per_set = table.groupby("attacked")["adv_vulnerability"].first()
    assert per_set.notna().all() and len(per_set) == len(chain)


@pytest.mark.slow
def test_rq3_synthetic_compares_uniform_and_optimal_weights_under_each_attack(local_ray, tmp_path):
    out = run_tiny("rq3-weights-adaptive", tmp_path, "search.pool=sD")
    s2 = stage(out, 2)
    pairs = s2[s2["aux"] != ""]
    assert sorted(zip(pairs["aux"], pairs["scheme"], strict=True)) == [
        ("D", "optimal"),
        ("D", "uniform"),
        ("s", "optimal"),
        ("s", "uniform"),
    ]
    weights = {
        (a, sc): json.loads(w)
        for a, sc, w in zip(pairs["aux"], pairs["scheme"], pairs["weights"], strict=True)
    }
    # App. B: main 1; s gets 0.01 with d (0.1 otherwise), D gets 0.01 unless the main is s.
    assert weights[("s", "optimal")] == pytest.approx({"s": 0.1, "r": 1.0})
    assert weights[("D", "optimal")] == pytest.approx({"D": 0.01, "r": 1.0})
    assert weights[("s", "uniform")] == pytest.approx({"s": 0.5, "r": 0.5})
    assert (s2["aux"] == "").sum() == 1  # the single-task baseline
    for name in ("pgd", "apgd", "wgd"):
        assert s2[f"vuln_{name}"].notna().all()
    assert (s2["vuln"] >= s2[["vuln_pgd", "vuln_apgd", "vuln_wgd"]].max(axis=1) - 1e-6).all()


@pytest.mark.slow
def test_rq4_synthetic_correlates_the_surrogates_with_the_resnet50_target(local_ray, tmp_path):
    from scipy import stats

    from rts.search.analysis.correlate import analyze
    from rts.search.analysis.rundata import load_run

    out = run_tiny(
        "rq4-surrogates", tmp_path, "search.pool=sDn", "search.max_aux=2", "stage1.epochs=2"
    )  # 7 subsets: a correlation needs >= 5 points
    s1, s2 = stage(out, 1), stage(out, 2)
    assert set(s1["trained_encoder"]) == {"resnet18_s8"}
    assert set(s2["trained_encoder"]) == {"resnet50_s8"}
    assert (s1["epochs"] == 2).all()  # no pruning: every subset's surrogate to the end
    table = analyze(load_run(out.paths.root), n_resamples=9).set_index("surrogate")
    assert {"vuln@1", "vuln@2", "surrogate_vuln", "clean_error", "grad_bound@0"} <= set(table.index)
    truth = s2.set_index("aux")["vuln"]
    proxy = s1.set_index("aux")["vuln"].reindex(truth.index)
    assert table.loc["surrogate_vuln", "n"] == 7
    expected = stats.pearsonr(proxy.to_numpy(), truth.to_numpy()).statistic
    assert table.loc["surrogate_vuln", "pearson_r"] == pytest.approx(expected)

"""The search config: YAML + overrides → validated dataclasses; one-line errors; round trip."""

from __future__ import annotations

import dataclasses
import math
import textwrap
from pathlib import Path

import pytest
import yaml

from rts.cli import main
from rts.search.config.convert import (
    apply_overrides,
    diff_configs,
    dump_config,
    from_dict,
    load_config,
    resolve,
)
from rts.search.config.schema import ConfigError, SearchConfig, space_size
from rts.search.config.validate import encoder_names


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(overrides: list[str], path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_are_valid_and_resolve_the_derived_values():
    cfg = resolve(load_config(None))
    assert cfg.search.main == "d"
    assert cfg.search.pool == "sDnkKeEprA"  # every task but the main one, registry order
    assert cfg.search.sampler == "tpe"
    assert cfg.search.max_aux == 10  # no limit: up to the whole pool
    assert cfg.attack.eps == pytest.approx(8 / 255)


def test_yaml_and_overrides(tmp_path):
    path = write(
        tmp_path,
        """
        name: demo
        search: {main: s, pool: "d,n,k", encoders: resnet18}
        attack: {eps: 8/255}
        """,
    )
    cfg = load_config(path, ["search.n_trials=64", "attack.eps=4/255", "stage1.lr=3e-3"])
    assert cfg.name == "demo"
    assert cfg.search.n_trials == 64
    assert cfg.attack.eps == 4 / 255
    assert cfg.stage1.lr == 0.003
    assert cfg.search.encoders == ("resnet18",)  # a scalar where a list is expected
    assert cfg.pool == "dnk"


def test_list_item_override_names_the_item_and_the_choices():
    message = error_of(["search.encoders=[resnet18,resnet50]", "search.encoders[1]=resnet19"])
    assert message.startswith("search.encoders[1]: unknown encoder 'resnet19'; choose from ")
    listed = message.split("choose from ")[1].split(", ")
    assert listed == encoder_names()
    assert "resnet18" in listed


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("search.n_trails=3", "search.n_trails: unknown key; choose from main, pool, min_aux"),
        ("stage1.epochs=three", "stage1.epochs: expected an integer, got 'three'"),
        ("stage1.epochs=true", "stage1.epochs: expected an integer, got True"),
        ("stage2.uniform_twins=1", "stage2.uniform_twins: expected true or false, got 1"),
        ("attack.eps=abc", "attack.eps: expected a number or a fraction such as 8/255"),
        ("attack.eps=2", "attack.eps: must be in (0, 1], got 2.0"),
        ("search.sampler=cmaes", "search.sampler: unknown value 'cmaes'; choose from tpe, random"),
        ("search.main=x", "search.main: unknown task 'x'; choose from s, d, D"),
        ("search.pool=sdk", "search.pool: holds the main task 'd'"),
        ("search.max_aux=12", "search.max_aux: must be in [min_aux=0, pool size 10], got 12"),
        ("search.min_aux=11", "search.min_aux: exceeds the pool size 10, got 11"),
        ("attack.ensemble=[pgd,fgsm2]", "attack.ensemble[1]: unknown attack 'fgsm2'; choose from"),
        (
            ("stage1.design=sampler", "stage1.grace_period=9"),  # ASHA prunes only the sampler's
            "stage1.grace_period: must be in [1, epochs=3], got 9",
        ),
        ("stage1.metric=vul", "stage1.metric: unknown value 'vul'; choose from vuln, clean_error"),
        ("stage1.epochs=-1", "stage1.epochs: must be >= 0 (0 = evaluate at initialisation)"),
        ("stage1.epochs=0", "stage1.epochs: 0 (a zero-training screen) has nothing to prune"),
        ("stage2.epochs=0", "stage2.epochs: must be >= 1, got 0"),
        ("stage2.output_init=zscore", "stage2.output_init: unknown output_init 'zscore'; choose"),
        ("name=a/b", "name: bad run name 'a/b'"),
        ("resources.device=tpu", "resources.device: unknown device 'tpu'"),
        ("resources.max_retries=-2", "resources.max_retries: must be >= -1 (-1 = retry forever)"),
        ("stage1.model=none", "stage1.design: pairs trains only a design: stage 2 needs the"),
        ("stage1.design=lattice", "stage1.design: unknown value 'lattice'; choose from sampler"),
        ("data.workers=-1", "data.workers: must be >= 0 (0 = decode in the trial's process)"),
        ("data.source=/no/such/folder", "data.source: '/no/such/folder' is neither 'synthetic'"),
        ("search", "bad override 'search'; write key=value"),
        ("stage1=3", "stage1: expected a mapping of keys, got 3"),
        ("attack.options.wgd.gama=1", "attack.options.wgd.gama: unknown key; choose from step_"),
        ("attack.options.cw.c=1", "attack.options.cw: unknown key; choose from pgd, mim, apgd"),
        ("attack.options.wgd.select=x", "attack.options.wgd: unknown wgd.select 'x'; choose"),
        ("attack.options.apgd.rho=2", "attack.options.apgd: apgd.rho must be in [0, 1]"),
        ("attack.options.pgd.step_size=0", "attack.options.pgd: pgd.step_size must be > 0"),
        ("attack.options.pgd.random_start=1", "attack.options.pgd.random_start: expected true"),
    ],
)
def test_bad_values_are_one_line_with_path_value_and_choices(override, expected):
    overrides = [override] if isinstance(override, str) else list(override)
    assert error_of(overrides).startswith(expected)


def test_cross_field_rules():
    several = ["search.encoders=[resnet18,resnet50]"]
    assert error_of(several).startswith("stage1.encoder: several encoders are searched")
    assert load_config(None, [*several, "stage1.encoder=same"]).search.encoders == (
        "resnet18",
        "resnet50",
    )
    grid = error_of(["search.sampler=grid", "weighting.schemes=[uniform,searched]"])
    assert grid.startswith("weighting.schemes: 'searched' weights are continuous")
    optimal = error_of(["search.pool=sk", "weighting.schemes=optimal"])
    assert "pool has k" in optimal
    assert load_config(None, ["search.pool=snDE", "weighting.schemes=optimal"])
    nothing = error_of(["stage2.top_k=0", "stage2.baseline=false"])
    assert nothing.startswith("stage2.top_k: 0 with baseline: false leaves stage 2 nothing")
    pareto = error_of(["search.objective=pareto", "stage1.metric=clean_error"])
    assert pareto.startswith("stage1.metric: clean_error is already the Pareto objective's")
    screen = load_config(None, ["stage1.epochs=0", "stage1.scheduler=fifo"])
    assert screen.stage1.epochs == 0  # the grace period only matters to ASHA


def test_trial_seed_defaults_to_the_sampler_seed_and_can_differ():
    from rts.search.engine.space import Space
    from rts.search.engine.trial import build_spec

    cfg = load_config(None, ["search.seed=5", "search.encoders=[resnet18]"])
    cand = Space.from_config(cfg).baseline("resnet18")
    assert resolve(cfg).search.trial_seed == 5
    assert build_spec(cfg, cand, 1).seed == 5
    own = load_config(None, ["search.seed=5", "search.encoders=[resnet18]", "search.trial_seed=0"])
    assert build_spec(own, cand, 2).seed == 0
    assert resolve(own).search.seed == 5
    # An old config.yaml without the key resumes as the same search.
    assert diff_configs(cfg, resolve(cfg)) == []
    assert diff_configs(cfg, own) == ["search.trial_seed: 5 -> 0"]


def test_output_init_reaches_each_stages_trials():
    from rts.search.engine.space import Space
    from rts.search.engine.trial import build_spec

    cfg = load_config(None, ["search.encoders=[resnet18]", "stage2.output_init=standardise"])
    cand = Space.from_config(cfg).baseline("resnet18")
    assert build_spec(cfg, cand, 1).output_init == "default"
    assert build_spec(cfg, cand, 2).output_init == "standardise"
    # an old config.yaml without the key resumes as the same search
    assert diff_configs(cfg, resolve(cfg)) == []


def test_space_size_counts_subsets_encoders_and_schemes():
    cfg = load_config(
        None,
        [
            "search.pool=sDnk",
            "search.min_aux=1",
            "search.max_aux=2",
            "search.encoders=[resnet18,resnet50]",
            "stage1.encoder=same",
            "weighting.schemes=[uniform,mtrobust]",
        ],
    )
    assert space_size(cfg) == (4 + 6) * 2 * 2


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(None, ["search.pool=sDn", "weighting.schemes=[uniform,searched]"])
    text = dump_config(cfg)
    raw = yaml.safe_load(text)
    assert raw["search"]["pool"] == "sDn" and raw["attack"]["eps"] == pytest.approx(8 / 255)
    again = load_config(write(tmp_path, text))
    assert again == resolve(cfg)
    assert dataclasses.asdict(again) == dataclasses.asdict(from_dict(raw))


def test_diff_ignores_resources_only():
    a = load_config(None)
    b = load_config(None, ["resources.cpus_per_trial=2", "resources.max_concurrent=4"])
    assert diff_configs(a, b) == []
    c = load_config(None, ["search.n_trials=8"])
    assert diff_configs(a, c) == ["search.n_trials: 16 -> 8"]


def test_overrides_do_not_mutate_their_input():
    raw = {"search": {"encoders": ["resnet18"]}}
    out = apply_overrides(raw, ["search.encoders[0]=resnet50", "stage2.top_k=1"])
    assert raw == {"search": {"encoders": ["resnet18"]}}
    assert out["search"]["encoders"] == ["resnet50"] and out["stage2"] == {"top_k": 1}


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        load_config(write(tmp_path, "search: [unclosed\n"))
    with pytest.raises(ConfigError, match=r"a config is a mapping of keys, got a list"):
        load_config(write(tmp_path, "- 1\n- 2\n"))
    assert load_config(write(tmp_path, "")) == SearchConfig()


def test_cli_bad_config_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    path = write(tmp_path, "search:\n  encoders: [resnet18, resnet19]\n")
    storage = tmp_path / "runs"
    assert main(["search", str(path), "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("rts: error: search.encoders[1]: unknown encoder 'resnet19'; choose from")
    assert not storage.exists()
    assert main(["search", str(tmp_path / "missing.yaml"), "--storage", str(storage)]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert main(["search", str(path), "search.n_trials=0", "--storage", str(storage)]) == 2
    good = write(tmp_path, "search: {encoders: [resnet18]}\n", "good.yaml")
    argv = ["search", str(good), "--storage", str(storage), "--address", "auto"]
    assert main([*argv, "--num-cpus", "2"]) == 2
    assert "--num-cpus 2: caps a local Ray only" in capsys.readouterr().err
    assert main(["search", str(good), "--storage", "ftp://host/runs"]) == 2
    assert "unsupported URI scheme 'ftp'" in capsys.readouterr().err
    assert not storage.exists()


def test_cli_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    path = write(
        tmp_path,
        """
        name: plan
        search: {main: d, pool: sDnk, max_aux: 2, n_trials: 8, encoders: [resnet50]}
        stage1: {design: sampler, model: none, epochs: 3, grace_period: 1, reduction_factor: 2}
        stage2: {top_k: 2, epochs: 10}
        """,
    )
    storage = tmp_path / "runs"
    assert main(["search", str(path), "--dry-run", "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "= 11 configurations" in out  # 1 + 4 + 6 subsets of sDnk with at most 2 tasks
    assert "stage 1 (surrogate): 8 trials, tpe sampler, resnet18" in out
    # ASHA rungs at epochs 1 and 2: 1 + 1/2 + 1/4 = 1.75 epochs per trial, 14 for 8 trials.
    assert "<= 24 trial-epochs, about 14 expected" in out
    assert "<= 3 trials" in out  # top 2 + the baseline (uniform weights: no twins)
    assert "estimated trials: 11" in out
    assert "ASHA on vuln (grace 1, reduction factor 2)" in out
    assert not storage.exists()
    assert main(["search", str(path), "--dry-run", "stage2.baseline=false"]) == 0
    out = capsys.readouterr().out
    assert "stage 2 (target): top 2 + uniform-weight twins: <= 2 trials" in out


def test_eps_fraction_is_exact():
    cfg = load_config(None, ["attack.eps=16/255", "attack.step_size=2/255"])
    assert cfg.attack.eps == 16 / 255 and cfg.attack.step_size == 2 / 255
    assert math.isclose(load_config(None, ["attack.eps=0.5"]).attack.eps, 0.5)


def test_eps_rule_is_the_attacks_rule_for_every_norm():
    """The attacks refuse eps > 1 whatever the norm; the config must refuse it before any trial."""
    assert error_of(["attack.norm=l2", "attack.eps=2"]).startswith(
        "attack.eps: must be in (0, 1], got 2.0"
    )


def test_attack_options_per_attack_and_the_shared_step():
    from rts.attacks import ATTACKS

    cfg = load_config(
        None,
        [
            "attack.options.pgd.step_size=1/255",
            "attack.options.wgd.gamma=-1",
            "attack.options.wgd.select=cyclic",
        ],
    )
    assert cfg.attack.options.of("pgd") == {"step_size": 1 / 255}
    assert cfg.attack.options.of("wgd") == {"gamma": -1.0, "select": "cyclic"}
    assert cfg.attack.options.of("apgd") == {} and cfg.attack.options.of("fgsm") == {}
    assert from_dict(yaml.safe_load(dump_config(cfg))) == resolve(cfg)  # round trip
    # the schema offers exactly the registry's options of each attack that has some
    for f in dataclasses.fields(cfg.attack.options):
        fields = {g.name for g in dataclasses.fields(getattr(cfg.attack.options, f.name))}
        assert fields == set(ATTACKS[f.name].options), f.name
    assert {n for n, spec in ATTACKS.items() if spec.options} == {
        f.name for f in dataclasses.fields(cfg.attack.options)
    }
    message = error_of(["attack.step_size=2/255", "attack.cheap=apgd", "attack.ensemble=[apgd]"])
    assert message.startswith("attack.step_size: applies to the fixed-step attacks (")
    assert "set attack.options.<attack>.step_size instead" in message


def test_trial_passes_each_attack_its_options():
    """The trial's attack wiring: an attack's own option reaches it; the shared step skips APGD."""
    import torch

    from rts.models import build_model
    from rts.search.engine.space import Candidate
    from rts.search.engine.trial import attack_metrics, build_spec
    from rts.tasks.data import DataSpec, load_data

    _, val = load_data(DataSpec(size=32, n=32, seed=0), "sd")
    probe = val.subset([0, 1, 2])
    model = build_model("resnet18", "sd", decoder_width=4, seed=0)
    candidate = Candidate(
        main="d", aux="s", scheme="uniform", weights=(0.5, 0.5), encoder="resnet18"
    )
    base = [
        "attack.ensemble=[pgd,apgd]",
        "attack.steps=2",
        "attack.images=3",
        "stage2.batch_size=3",
    ]

    def vulns(*overrides: str) -> dict:
        spec = build_spec(load_config(None, [*base, *overrides]), candidate, 2)
        with torch.random.fork_rng(devices=[]):
            out = attack_metrics(model, probe, spec)
        return {k: out[k] for k in ("vuln_pgd", "vuln_apgd")}

    plain = vulns()
    shared = vulns("attack.step_size=1/255")
    own = vulns("attack.options.pgd.step_size=1/255")
    assert shared["vuln_apgd"] == plain["vuln_apgd"]  # APGD never takes the shared step
    assert shared["vuln_pgd"] == own["vuln_pgd"] != plain["vuln_pgd"]
    assert vulns("attack.options.apgd.step_size=1/255")["vuln_apgd"] != plain["vuln_apgd"]


def test_a_retired_key_of_an_older_run_is_ignored_with_a_warning():
    """Runs written before resources.max_retries resume: the old key is dropped, not fatal."""
    with pytest.warns(UserWarning, match="resources.max_failures: replaced by resources.max_retr"):
        cfg = load_config(None, ["resources.max_failures=0"])
    assert cfg.resources.max_retries == 3

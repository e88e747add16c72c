"""The parts of the deterministic stage 1 that need no Ray: rungs, the halving rule, seeded
proposals from a journal that is cut back after a kill, and the records."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from rts.search.config.convert import load_config, resolve
from rts.search.config.schema import ConfigError
from rts.search.engine.batches import Outcome, covered, propose, study_at, tell_batch
from rts.search.engine.faults import failure_reason
from rts.search.engine.halving import continuing, expected_epochs, rung_epochs
from rts.search.engine.plan import asha_expected_epochs
from rts.search.engine.records import (
    BatchRecord,
    RungResult,
    read_batches,
    read_rung,
    recorded_results,
    write_batch,
    write_rung,
)
from rts.search.engine.samplers import MAX_REDRAWS, sampler_seed, tell_outcome
from rts.search.engine.space import Space
from tests.search.samplers import StuckSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_rungs_are_ashas_then_the_budget():
    assert rung_epochs(3, 1, 2) == [1, 2, 3]
    assert rung_epochs(4, 1, 2) == [1, 2, 4]
    assert rung_epochs(9, 1, 3) == [1, 3, 9]
    assert rung_epochs(3, 3, 2) == [3]
    assert rung_epochs(3, 1, 2, "fifo") == [3]
    assert rung_epochs(0, 1, 2, "fifo") == [0]


def test_expected_epochs_by_hand():
    # 1 epoch for all, half go to 2, a quarter to 3: 1 + 0.5 + 0.25.
    assert expected_epochs([1, 2, 3], 2) == pytest.approx(1.75)
    assert asha_expected_epochs(3, 1, 2) == pytest.approx(1.75)
    assert asha_expected_epochs(3, 1, 2, "fifo") == 3.0


def test_halving_keeps_the_best_fraction_of_everything_at_the_rung():
    batch = {(("a",), 5): 0.3, (("b",), 6): 0.1, (("c",), 7): 0.2, (("d",), 8): math.nan}
    # 3 finite in the batch + 1 earlier: ceil(4/2) = 2 continue; the earlier 0.15 is one of them.
    earlier = [(0.15, (("z",), 1))]
    assert continuing(batch, earlier, 2) == {(("b",), 6)}
    assert continuing(batch, [], 2) == {(("b",), 6), (("c",), 7)}
    # Never a trial without a value, even when nothing else is left.
    assert continuing({(("d",), 8): math.nan}, [], 2) == set()


def test_halving_breaks_ties_by_candidate_key_then_number_not_by_order():
    tied = {(("sk",), 2): 0.5, (("s",), 3): 0.5, (("k",), 1): 0.5, (("n",), 4): 0.5}
    keep = continuing(tied, [], 2)
    assert keep == {(("k",), 1), (("n",), 4)}
    assert continuing(dict(reversed(list(tied.items()))), [], 2) == keep


def test_sampler_seed_depends_on_search_seed_and_number_only():
    assert sampler_seed(0, 3) == sampler_seed(0, 3)
    assert len({sampler_seed(s, n) for s in (0, 1, -1) for n in range(5)}) == 15


def config(*extra: str):
    base = [
        "search.pool=sDnk",
        "search.max_aux=2",
        "search.n_trials=8",
        "search.encoders=[resnet18]",
        "search.deterministic=true",
        "search.batch=4",
    ]
    return resolve(load_config(None, [*base, *extra]))


def fake_outcome(key: tuple) -> Outcome:
    """A deterministic made-up result per candidate."""
    value = 1.0 + 0.1 * len(key[1]) - 0.01 * sum(map(ord, key[1])) % 7
    return Outcome("COMPLETE", [value], {1: value + 0.3, 2: value})


def study_content(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.params, t.state.name, t.values) for t in study.trials]


def run_batches(cfg, journal, n_batches: int, kill_mid_batch: int | None = None):
    """Propose and tell ``n_batches`` batches as the driver does; optionally stop (a kill) after
    one ask of batch ``kill_mid_batch`` and reopen the study from the records."""
    space = Space.from_config(cfg)
    done: list[BatchRecord] = []
    study = study_at(cfg, journal, None)
    proposals = []
    for batch in range(1, n_batches + 1):
        if batch == kill_mid_batch:
            propose(study, cfg, space, (batch - 1) * 4 + 1, 1, 8, done)  # asked, never told
            study = study_at(cfg, journal, done[-1].journal_bytes)  # the rerun
        proposal = propose(study, cfg, space, (batch - 1) * 4 + 1, 4, 8, done)
        outcomes = {m.number: fake_outcome(m.key) for m in proposal.members}
        tell_batch(study, proposal, outcomes)
        keys = {m.number: m.key for m in proposal.members}
        done.append(BatchRecord(batch, keys, outcomes, journal.stat().st_size))
        proposals.append([m.key for m in proposal.members])
    return proposals, study_content(study)


def test_the_same_journal_and_seed_give_the_same_proposals(tmp_path):
    cfg = config()
    a = run_batches(cfg, tmp_path / "a.journal", 2)
    b = run_batches(cfg, tmp_path / "b.journal", 2)
    assert a == b
    keys = [k for batch in a[0] for k in batch]
    assert len(set(keys)) == len(keys) == 8  # distinct candidates
    other = run_batches(config("search.seed=1"), tmp_path / "c.journal", 2)
    assert other[0] != a[0]


def test_a_kill_after_asking_is_undone_by_cutting_the_journal_back(tmp_path):
    cfg = config()
    clean = run_batches(cfg, tmp_path / "a.journal", 2)
    killed = run_batches(cfg, tmp_path / "b.journal", 2, kill_mid_batch=2)
    assert killed == clean  # the same proposals, and the same study: no trace of the kill


def test_batches_beyond_the_journal_are_told_again(tmp_path):
    """A journal older than the batch records (a URI's remote journal replaced a newer local
    one): the batches it does not hold are proposed and told again."""
    journal = tmp_path / "j.journal"
    records = [BatchRecord(b, {}, {}, 100 * b) for b in (1, 2, 3)]
    assert covered(records, journal) == []
    journal.write_bytes(b"x" * 250)
    assert covered(records, journal) == records[:2]
    journal.write_bytes(b"x" * 300)
    assert covered(records, journal) == records


def test_a_repeat_of_a_finished_candidate_is_told_its_outcome_not_run(tmp_path):
    cfg = config("search.max_aux=1", "search.pool=sD")  # 3 candidates only
    space = Space.from_config(cfg)
    study = study_at(cfg, tmp_path / "j.journal", None)
    first = propose(study, cfg, space, 1, 3, 8, [])
    assert len({m.key for m in first.members}) == 3
    outcomes = {m.number: fake_outcome(m.key) for m in first.members}
    tell_batch(study, first, outcomes)
    record = BatchRecord(1, {m.number: m.key for m in first.members}, outcomes, 0)
    # Every candidate is known: the sampler repeats, each repeat is told at once, and after
    # MAX_REDRAWS by the sampler and MAX_REDRAWS at random the repeat runs (space exhausted).
    again = propose(study, cfg, space, 4, 1, 8, [record])
    assert again.members[0].key in record.keys.values()
    by_key = {record.keys[n]: o.values for n, o in outcomes.items()}
    repeats = study.trials[3:-1]  # the last one is the member, still running
    assert len(repeats) == 2 * MAX_REDRAWS
    assert all(t.values == by_key[_key(space, t.params)] for t in repeats)


def test_a_sampler_stuck_on_one_candidate_is_redrawn_at_random(tmp_path, monkeypatch):
    """Injected fault: the configured sampler only repeats itself. The batch still gets four
    distinct candidates of the four, the same ones on a rerun."""
    import rts.search.engine.samplers as samplers

    monkeypatch.setattr(samplers, "make_sampler", lambda *a, **k: StuckSampler())
    cfg = config("search.max_aux=2", "search.pool=sD")  # "", "s", "D", "sD"
    space = Space.from_config(cfg)

    def keys(journal: Path) -> list:
        proposal = propose(study_at(cfg, journal, None), cfg, space, 1, 4, 4, [])
        return [m.key for m in proposal.members]

    first = keys(tmp_path / "a.journal")
    assert len(set(first)) == 4
    assert keys(tmp_path / "b.journal") == first  # seeded: reproducible


def _key(space: Space, params: dict) -> tuple:
    from rts.search.engine.space import candidate_key

    return candidate_key(space.define(optuna.trial.FixedTrial(params)))


def test_pruned_outcomes_carry_their_intermediate_values(tmp_path):
    cfg = config()
    study = study_at(cfg, tmp_path / "j.journal", None)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    tell_outcome(study, trial, Outcome("PRUNED", None, {0: 2.0, 1: 1.5}))
    frozen = study.trials[0]
    assert frozen.state == optuna.trial.TrialState.PRUNED
    assert frozen.intermediate_values == {0: 2.0, 1: 1.5}


def test_records_round_trip_and_rebuild_ray_like_results(tmp_path):
    key = ("d", "s", "[0.5, 0.5]", "resnet18")
    config_entry = {"main": "d", "aux": "s", "scheme": "uniform", "weights": "{}", "encoder": "r"}
    rung1 = RungResult(
        3,
        key,
        config_entry,
        [{"epoch": 0, "vuln": 2.0, "time_total_s": 0.1}, {"epoch": 1, "vuln": 1.3}],
        rung=1,
        checkpoint="/x/c1",
        ray_trial_id="aaa",
    )
    rung2 = RungResult(
        3,
        key,
        config_entry,
        [{"epoch": 2, "vuln": math.nan, "time_total_s": 2.5}],
        rung=2,
        failure="RuntimeError: boom",
        ray_trial_id="bbb",
    )
    write_rung(tmp_path / "r1.json", [rung1])
    assert read_rung(tmp_path / "r1.json") == [rung1]
    assert read_rung(tmp_path / "missing.json") is None
    back = read_rung(tmp_path / "r1.json")[0]
    assert back.value(1, "vuln") == 1.3 and math.isnan(back.value(5, "vuln"))
    (result,) = recorded_results([rung1, rung2], "/exp")
    assert result.path == "/exp/trial_0003_bbb"
    assert list(result.metrics_dataframe["epoch"]) == [0, 1, 2]
    assert failure_reason(result.error) == "RuntimeError: boom"

    record = BatchRecord(1, {3: key}, {3: Outcome("PRUNED", None, {1: 1.3})}, 123, rungs=2)
    write_batch(tmp_path / "batch0001.json", record)
    assert read_batches(tmp_path) == [record]


def test_batch_must_be_positive():
    with pytest.raises(ConfigError, match=r"^search\.batch: must be >= 1"):
        load_config(None, ["search.batch=0"])
    with pytest.raises(ConfigError, match=r"^search\.deterministic: expected true or false"):
        load_config(None, ["search.deterministic=maybe"])


CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_is_deterministic(path):
    from rts.search.config.schema import is_multi
    from rts.search.config.studies import study_configs

    cfg = resolve(load_config(path, ["data.source=synthetic"]))
    for study in study_configs(cfg) if is_multi(cfg) else [cfg]:  # one per main task
        study = resolve(study)
        assert study.search.deterministic
        if study.sampler == "grid" and study.stage1.scheduler == "fifo":
            # Nothing depends on the batch there: it must not cap the parallelism.
            assert study.search.batch >= study.search.n_trials


def test_the_report_records_the_mode():
    from rts.search.analysis.correlate import analyze
    from rts.search.analysis.rundata import make_run_data
    from rts.search.report.html import render_html, render_markdown, search_mode
    from tests.search.test_analysis import fake_frames

    frames = fake_frames()
    det = make_run_data(*frames, config={"search": {"deterministic": True, "batch": 4}})
    old = make_run_data(*frames, config={"search": {"main": "d"}})  # a run from before the option
    assert search_mode(det).startswith("deterministic (stage 1 proposes in batches of 4")
    assert search_mode(old).startswith("asynchronous")
    table = analyze(det, n_resamples=49)
    assert "Search mode: deterministic" in render_html(det, table, [])
    assert "Search mode: deterministic" in render_markdown(det, table, [])


def test_resuming_with_other_numerics_warns_but_concurrency_does_not(tmp_path):
    import warnings

    from rts.search.engine.paths import run_dir
    from rts.search.results.pipeline import prepare_run_dir

    paths = run_dir(config(), tmp_path)
    prepare_run_dir(config(), paths)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_run_dir(config("resources.max_concurrent=4"), paths)  # no effect on results
    with pytest.warns(UserWarning, match=r"resources\.cpus_per_trial: 1\.0 -> 2\.0"):
        prepare_run_dir(config("resources.cpus_per_trial=2"), paths)


def test_dry_run_says_which_mode_will_run(capsys):
    from rts.cli import main

    quickstart = CONFIGS[[p.stem for p in CONFIGS].index("quickstart")]
    early = ["stage1.design=sampler", "stage1.model=none", "stage1.epochs=3"]  # ASHA's rungs
    assert main(["search", str(quickstart), *early, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "mode: deterministic (stage 1 proposes in batches of 4" in out
    assert "successive halving at rung barriers on vuln" in out
    assert main(["search", str(quickstart), *early, "search.deterministic=false", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "mode: asynchronous" in out and "ASHA on vuln" in out

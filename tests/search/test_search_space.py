"""The define-by-run space, the samplers and the searcher's trial states (real Optuna)."""

from __future__ import annotations

import itertools
import json
import math
import pickle

import optuna
import pytest

from rts.search.config.convert import load_config
from rts.search.engine.samplers import SamplerRecipe, journal_storage, make_sampler
from rts.search.engine.searcher import StudySearcher
from rts.search.engine.space import Candidate, Space, decode, scheme_weights
from tests.search.samplers import StuckSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def space(**kw) -> Space:
    base = dict(main="d", pool="sDnk", min_aux=0, max_aux=2, encoders=("resnet18",))
    return Space(**{**base, **kw})


def test_subsets_are_every_combination_once():
    sp = space(min_aux=1, max_aux=3)
    subsets = sp.subsets()
    expected = {frozenset(c) for n in (1, 2, 3) for c in itertools.combinations("sDnk", n)}
    assert {frozenset(s) for s in subsets} == expected
    assert len(subsets) == len(expected) == 4 + 6 + 4 == sp.size
    assert all(s == "".join(k for k in "sDnk" if k in s) for s in subsets)  # registry order


@pytest.mark.parametrize(
    ("aux", "scheme", "expected"),
    [
        ("sk", "uniform", {"s": 1 / 3, "d": 1 / 3, "k": 1 / 3}),
        ("sk", "mtrobust", {"s": 0.05, "d": 1.0, "k": 0.05}),  # main 1, aux share lambda 0.1
        ("s", "optimal", {"s": 0.01, "d": 1.0}),  # supp. App. B: s is 0.01 for the sd pair
        ("n", "optimal", {"d": 1.0, "n": 0.01}),  # n is 0.01 for the nd pair
        ("E", "optimal", {"d": 1.0, "E": 0.1}),  # E is 0.1 with every main task
        ("", "uniform", {"d": 1.0}),
    ],
)
def test_scheme_weights_by_hand(aux, scheme, expected):
    weights = scheme_weights("d", aux, scheme, aux_lambda=0.1)
    tasks = "".join(k for k in "sdDnkE" if k in expected)
    assert weights == pytest.approx(tuple(expected[k] for k in tasks))


def test_searched_weights_and_candidate_round_trip():
    sp = space(schemes=("searched",))
    cand = sp.candidate("ks", "searched", "resnet18", {"s": 0.2, "k": 0.05})
    assert cand.aux == "sk" and cand.tasks == "sdk"
    assert cand.weights == (0.2, 1.0, 0.05)
    assert decode(json.loads(json.dumps(cand.to_config()))) == cand
    assert cand.uniform_twin().weights == (1 / 3,) * 3 and not cand.is_uniform
    with pytest.raises(ValueError, match=r"weights .* do not match tasks"):
        decode({**cand.to_config(), "aux": "s"})


def ask_many(sp: Space, sampler, n: int) -> list[tuple[Candidate, dict]]:
    study = optuna.create_study(sampler=sampler)
    out = []
    for _ in range(n):
        trial = study.ask()
        cand = decode(sp.define(trial))
        out.append((cand, dict(trial.params)))
        study.tell(trial, sum(cand.weights))
    return out


def test_define_by_run_respects_the_limits_and_asks_weights_only_for_chosen_tasks():
    sp = space(min_aux=1, max_aux=3, schemes=("uniform", "searched"), weight_range=(0.01, 1.0))
    for cand, params in ask_many(sp, optuna.samplers.RandomSampler(seed=0), 60):
        assert 1 <= len(cand.aux) <= 3 and set(cand.aux) <= set("sDnk")
        assert params[f"aux_{params['n_aux']}"] == cand.aux
        asked = {k[2:] for k in params if k.startswith("w_")}
        if cand.scheme == "searched":
            assert asked == set(cand.aux)
            assert all(0.01 <= params[f"w_{k}"] <= 1.0 for k in cand.aux)
            assert cand.weight_map["d"] == 1.0
        else:
            assert asked == set() and cand.is_uniform


@pytest.mark.parametrize(("low", "high"), [(0, 4), (1, 3), (2, 2), (0, 1), (3, 4)])
@pytest.mark.parametrize("sampler", ["random", "tpe", "gp"])
def test_per_task_encoding_never_leaves_min_aux_to_max_aux(low, high, sampler):
    sp = space(min_aux=low, max_aux=high, encoding="per_task")
    seen = set()
    for cand, params in ask_many(sp, make_sampler(sampler, sp, seed=0, n_trials=40), 40):
        assert low <= len(cand.aux) <= high and set(cand.aux) <= set("sDnk")
        asked = {k[4:] for k in params if k.startswith("aux_")}
        assert asked <= set("sDnk") and "n_aux" not in params
        # every asked task's answer is what the candidate holds
        assert all(params[f"aux_{t}"] == (t in cand.aux) for t in asked)
        seen.add(cand.aux)
    if (low, high) == (0, 4):
        assert len(seen) >= 8  # random proposals reach much of the 16-subset space


def test_grid_sampler_visits_every_configuration_exactly_once():
    sp = space(encoders=("resnet18", "resnet50"), grid=True)
    sampler = make_sampler("grid", sp, seed=0, n_trials=sp.size)
    seen = [(c.aux, c.encoder) for c, _ in ask_many(sp, sampler, sp.size)]
    assert len(seen) == len(set(seen)) == sp.size == 11 * 2


@pytest.mark.parametrize("name", ["tpe", "random", "nsga2"])
def test_samplers_are_reproducible_by_seed(name):
    sp = space()

    def run(seed):
        return [c for c, _ in ask_many(sp, make_sampler(name, sp, seed=seed, n_trials=12), 12)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def searcher_for(storage, *, metrics=("vuln",), final_epoch=3, sampler="random"):
    sp = space(schemes=("searched",))  # continuous weights: no configuration repeats
    return StudySearcher(
        sp,
        sampler=SamplerRecipe(sampler, sp, 8),
        metrics=metrics,
        final_epoch=final_epoch,
        budget=8,
        storage=storage,
    )


def test_searcher_tells_optuna_complete_pruned_and_failed():
    storage = optuna.storages.InMemoryStorage()
    searcher = searcher_for(storage)
    for tid in ("done", "pruned", "error", "nan"):
        config = searcher.suggest(tid)
        assert decode(config).main == "d"
    searcher.on_trial_result("pruned", {"vuln": 1.5, "training_iteration": 1, "epoch": 0})
    searcher.on_trial_complete("done", {"vuln": 0.5, "epoch": 3, "training_iteration": 4})
    searcher.on_trial_complete("pruned", {"vuln": 0.9, "epoch": 1, "training_iteration": 2})
    searcher.on_trial_complete("error", {"vuln": 0.1, "epoch": 3}, error=True)
    searcher.on_trial_complete("nan", {"vuln": math.nan, "epoch": 3, "training_iteration": 4})
    trials = optuna.load_study(study_name="stage1", storage=storage).trials
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "PRUNED", "FAIL", "FAIL"]
    assert trials[0].value == 0.5
    # the stopping result reaches the study as the pruned trial's last intermediate value
    assert trials[1].intermediate_values == {1: 1.5, 2: 0.9}


def test_two_objective_searcher():
    storage = optuna.storages.InMemoryStorage()
    searcher = searcher_for(storage, metrics=("vuln", "clean_error"), final_epoch=2)
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_complete("a", {"vuln": 0.5, "clean_error": 0.2, "epoch": 2})
    searcher.on_trial_complete("b", {"vuln": 0.4, "clean_error": 0.3, "epoch": 1})
    study = optuna.load_study(study_name="stage1", storage=storage)
    assert len(study.directions) == 2
    assert [(t.state.name, t.values) for t in study.trials] == [
        ("COMPLETE", [0.5, 0.2]),
        ("PRUNED", None),
    ]


def test_restore_closes_trials_asked_after_the_snapshot(tmp_path):
    journal = tmp_path / "optuna.journal"
    searcher = searcher_for(journal)
    searcher.suggest("a")
    snapshot = tmp_path / "searcher.pkl"
    searcher.save(str(snapshot))
    searcher.suggest("b")  # asked after the snapshot: unknown to a restored searcher
    restored = searcher_for(journal)
    restored.restore(str(snapshot))
    study = optuna.load_study(study_name="stage1", storage=journal_storage(journal))
    assert [t.state.name for t in study.trials] == ["RUNNING", "FAIL"]
    restored.on_trial_complete("a", {"vuln": 0.3, "epoch": 3})
    assert (
        optuna.load_study(study_name="stage1", storage=journal_storage(journal))
        .trials[0]
        .state.name
        == "COMPLETE"
    )
    pickle.loads(pickle.dumps(restored))  # Ray pickles the searcher


def test_space_from_config():
    cfg = load_config(
        None, ["search.pool=sk", "search.sampler=grid", "weighting.schemes=[uniform,mtrobust]"]
    )
    sp = Space.from_config(cfg)
    assert (
        sp.grid
        and sp.max_aux == 2
        and sp.grid_space()
        == {
            "aux": ["", "s", "k", "sk"],
            "scheme": ["uniform", "mtrobust"],
        }
    )


def stuck(seed: int) -> StuckSampler:
    return StuckSampler(seed=seed)


def two_config_searcher(storage, budget: int):
    sp = space(pool="s", max_aux=1)  # two configurations: "" and "s"
    return StudySearcher(
        sp,
        sampler=stuck,  # always "" first: the repeats are certain
        metrics=("vuln",),
        final_epoch=1,
        budget=budget,
        storage=storage,
    )


def test_searcher_answers_repeats_and_never_proposes_a_candidate_twice():
    storage = optuna.storages.InMemoryStorage()
    searcher = two_config_searcher(storage, budget=4)
    first = decode(searcher.suggest("a"))
    searcher.on_trial_complete("a", {"vuln": 0.7, "epoch": 1, "training_iteration": 1})
    second = decode(searcher.suggest("b"))
    assert {first.aux, second.aux} == {"", "s"}  # the repeat of "a" was drawn again
    study = optuna.load_study(study_name="stage1", storage=storage)
    repeats = [t for t in study.trials if t.user_attrs.get("repeat_of") == "a"]
    assert repeats and len(repeats) == len(study.trials) - 2
    for t in repeats:  # closed with what running them again would have said
        assert t.state.name == "COMPLETE" and t.value == 0.7
    # Space exhausted: the two remaining slots are answered, not trained, and the search ends.
    assert searcher.suggest("c") == "FINISHED"
    study = optuna.load_study(study_name="stage1", storage=storage)
    assert study.user_attrs["untrained_slots"] == 2
    waiting = [t for t in study.trials if t.user_attrs.get("repeat_of") == "b"]
    assert waiting and all(t.state.name == "RUNNING" for t in waiting)  # "b" still runs
    searcher.on_trial_complete("b", {"vuln": 0.4, "epoch": 0, "training_iteration": 1})
    study = optuna.load_study(study_name="stage1", storage=storage)
    waiting = [t for t in study.trials if t.user_attrs.get("repeat_of") == "b"]
    assert all(t.state.name == "PRUNED" for t in waiting)  # b's outcome: pruned at epoch 0
    assert all(t.intermediate_values == {1: 0.4} for t in waiting)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    pickle.loads(pickle.dumps(searcher))  # Ray pickles the searcher


def stuck_search(storage, seed: int = 0):
    sp = space(pool="sD", max_aux=2)  # four configurations: "", "s", "D", "sD"
    return StudySearcher(
        sp,
        sampler=stuck,
        metrics=("vuln",),
        final_epoch=1,
        budget=4,
        storage=storage,
        seed=seed,
    )


def test_a_sampler_that_keeps_repeating_is_redrawn_at_random_while_untried_candidates_remain():
    """Four slots, four candidates, a sampler that always proposes the same one: every slot
    still trains a new candidate (before, three were answered as repeats)."""

    def run(seed):
        storage = optuna.storages.InMemoryStorage()
        searcher = stuck_search(storage, seed)
        trained = []
        for tid in "abcd":
            trained.append(decode(searcher.suggest(tid)).aux)
            searcher.on_trial_complete(tid, {"vuln": 0.5, "epoch": 1, "training_iteration": 1})
        assert searcher.suggest("e") == "FINISHED"
        study = optuna.load_study(study_name="stage1", storage=storage)
        assert study.user_attrs.get("untrained_slots", 0) == 0
        return trained

    trained = run(0)
    assert sorted(trained) == ["", "D", "s", "sD"]  # each candidate once
    assert trained[0] == decode(stuck_search(optuna.storages.InMemoryStorage()).suggest("x")).aux
    assert run(0) == trained  # reproducible


def test_a_trial_the_study_already_closed_may_report_again():
    """After kill -9 the journal can be newer than Ray's snapshot: a finished trial resumes."""
    storage = optuna.storages.InMemoryStorage()
    searcher = searcher_for(storage)
    searcher.suggest("t")
    number = optuna.load_study(study_name="stage1", storage=storage).trials[0].number
    optuna.load_study(study_name="stage1", storage=storage).tell(number, 0.4)  # journal: done
    searcher.on_trial_result("t", {"vuln": 0.5, "training_iteration": 2, "epoch": 1})
    searcher.on_trial_complete("t", {"vuln": 0.5, "epoch": 3, "training_iteration": 4})
    trial = optuna.load_study(study_name="stage1", storage=storage).trials[0]
    assert trial.state.name == "COMPLETE" and trial.value == 0.4  # the study's record stands


def test_designs_are_the_main_task_alone_with_each_task_and_each_two():
    sp = space(min_aux=2, max_aux=3)  # a design ignores the bounds: it is for the effect model
    pool = sp.pool
    pairs = [c.aux for c in sp.design("pairs")]
    assert pairs == ["", *pool]
    triples = [c.aux for c in sp.design("triples")]
    n = len(pool)
    assert len(triples) == 1 + n + n * (n - 1) // 2 and len(set(triples)) == len(triples)
    assert all(len(a) <= 2 for a in triples)
    assert {c.encoder for c in sp.design("triples")} == {sp.encoders[0]}

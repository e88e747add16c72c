"""The stage-1 searcher on public APIs: it pickles with any sampler (NSGA-II holds a thread lock
since Optuna 5.1), and a searcher saved mid-stage and restored in a new process proposes what
the saved one would have proposed next."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from rts.search.config.schema import ConfigError
from rts.search.engine.samplers import SamplerRecipe, journal_storage
from rts.search.engine.searcher import StudySearcher
from rts.search.engine.space import Space, decode
from rts.search.engine.stages import check_searcher_version

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[2]


def space() -> Space:
    return Space(main="d", pool="sDnkE", min_aux=0, max_aux=5, encoders=("resnet18",))


def searcher(journal: Path, sampler: str = "tpe", metrics=("vuln",)) -> StudySearcher:
    sp = dataclasses.replace(space(), grid=sampler == "grid")
    return StudySearcher(
        sp,
        sampler=SamplerRecipe(sampler, sp, 12),
        metrics=metrics,
        final_epoch=2,
        budget=12,
        storage=journal,
        seed=7,
    )


def run_some(s: StudySearcher, ids: list[str], metrics=("vuln",)) -> list[str]:
    """Suggest and finish ``ids`` in order (values from the subset's size: deterministic)."""
    out = []
    for tid in ids:
        aux = decode(s.suggest(tid)).aux
        out.append(aux)
        result = {m: 0.5 + 0.1 * len(aux) - 0.01 * i for i, m in enumerate(metrics)}
        s.on_trial_complete(tid, {**result, "epoch": 2, "training_iteration": 2})
    return out


RESTORE_AND_SUGGEST = """
import json, sys
from tests.search.test_searcher_restore import searcher
from rts.search.engine.space import decode
s = searcher(sys.argv[1])
s.restore(sys.argv[2])
print(json.dumps([decode(s.suggest(t)).aux for t in ("t6", "t7", "t8")]))
"""


def test_a_searcher_restored_in_a_new_process_proposes_the_same_next_candidates(tmp_path):
    first = searcher(tmp_path / "a" / "optuna.journal")
    run_some(first, ["t1", "t2", "t3", "t4"])
    first.suggest("t5")  # still running when the state is saved
    state = tmp_path / "searcher-state.pkl"
    first.save(str(state))
    again = subprocess.run(
        [sys.executable, "-c", RESTORE_AND_SUGGEST, str(tmp_path / "b" / "j"), str(state)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    expected = [decode(first.suggest(t)).aux for t in ("t6", "t7", "t8")]
    assert json.loads(again.stdout.strip().splitlines()[-1]) == expected
    # the restored study is the saved one (moved to the new journal), the running trial kept
    study = optuna.load_study(study_name="stage1", storage=journal_storage(tmp_path / "b" / "j"))
    assert [t.state.name for t in study.trials][:5] == ["COMPLETE"] * 4 + ["RUNNING"]


@pytest.mark.parametrize("sampler", ["tpe", "random", "nsga2", "grid", "gp"])
def test_the_searcher_pickles_with_every_sampler(tmp_path, sampler):
    """What Ray does with a searcher when the Tuner starts and at every snapshot."""
    metrics = ("vuln", "clean_error") if sampler == "nsga2" else ("vuln",)
    s = searcher(tmp_path / "optuna.journal", sampler, metrics)
    done = run_some(s, ["a", "b"], metrics)
    copy = pickle.loads(pickle.dumps(s))  # no study, no sampler inside: rebuilt on use
    assert decode(copy.suggest("c")).aux not in done
    assert len(copy.study.trials) >= 3 and copy.study.trials[0].state.name == "COMPLETE"


def test_a_stage1_started_by_the_earlier_searcher_is_refused_in_one_line(tmp_path):
    exp = tmp_path / "run" / "ray" / "stage1"
    exp.mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(b"\x80\x05rts.search.engine.searcher\x94StagedOptunaSearch")
    with pytest.raises(ConfigError) as err:
        check_searcher_version(str(exp))
    message = str(err.value)
    assert "\n" not in message and "delete" in message and "optuna.journal" in message
    (exp / "tuner.pkl").write_bytes(b"\x80\x05rts.search.engine.searcher\x94StudySearcher")
    check_searcher_version(str(exp))  # this version's: no error


def test_an_exhaustive_grid_asks_each_point_once_while_trials_run(tmp_path):
    """Optuna's grid sampler numbers its points by trial number in a permutation drawn from its
    seed: with the search seed fixed, seven running slots get the seven subsets, no repeat."""
    sp = dataclasses.replace(space(), pool="sDk", max_aux=2, grid=True)
    s = StudySearcher(
        sp,
        sampler=SamplerRecipe("grid", sp, 7, fixed_seed=0),
        metrics=("vuln",),
        final_epoch=2,
        budget=7,
        storage=tmp_path / "optuna.journal",
    )
    proposed = [decode(s.suggest(f"t{i}")).aux for i in range(7)]
    assert sorted(proposed) == sorted(["", "s", "D", "k", "sD", "sk", "Dk"])
    assert len(s.study.trials) == 7  # no repeat was asked and answered
    assert s.suggest("t7") == "FINISHED"

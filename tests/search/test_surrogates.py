"""The surrogate registry: registered functions, per-epoch expansion, adding one."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rts.search.analysis import surrogates as sur
from rts.search.analysis.correlate import analyze
from rts.search.analysis.surrogates import (
    SURROGATES,
    TrialRecord,
    expand_surrogates,
    get_surrogate,
    register_surrogate,
)
from tests.search.test_analysis import fake_run


def record(history=None, attacks=None, **row):
    """A trial record from a history dict-of-lists."""
    base = {"trial_id": "t", "tasks": "sd", "main": "d", "clean_error": math.nan}
    base.update(row)
    h = pd.DataFrame(history or {"epoch": []})
    a = pd.DataFrame(attacks or {"attack": [], "attacked": [], "task": [], "rel_vuln": []})
    return TrialRecord(base, h, a)


HISTORY = {
    "epoch": [0, 1, 2, 3],
    "time_s": [0.5, 10.0, 20.0, 30.0],
    "clean_error": [math.nan, 0.4, 0.3, 0.25],
    "vuln": [math.nan, 2.0, 1.5, 1.2],
    "grad_bound": [0.03, 0.05, math.nan, math.nan],
}


def test_registered_families():
    assert {"vuln", "surrogate_vuln", "clean_error", "grad_bound"} <= set(SURROGATES)
    assert SURROGATES["vuln"].per_epoch and SURROGATES["grad_bound"].per_epoch
    assert not SURROGATES["grad_bound"].needs_attack
    assert not SURROGATES["clean_error"].needs_attack
    for spec in SURROGATES.values():
        assert spec.direction in ("lower", "higher") and spec.description


def test_registered_surrogates_read_the_right_numbers():
    r = record(HISTORY)
    assert get_surrogate("vuln@1")(r) == 2.0
    assert get_surrogate("vuln@3")(r) == 1.2
    assert math.isnan(get_surrogate("vuln@0")(r))  # not measured before training
    assert math.isnan(get_surrogate("vuln@7")(r))  # not reached (e.g. pruned)
    assert get_surrogate("grad_bound@0")(r) == 0.03  # at initialisation: no training
    assert get_surrogate("grad_bound@1")(r) == 0.05
    assert get_surrogate("surrogate_vuln")(r) == 1.2  # last recorded epoch
    assert get_surrogate("clean_error")(r) == 0.25


def test_surrogates_fall_back_and_never_raise_on_gaps():
    empty = record()
    for name in ("vuln@1", "grad_bound@0", "surrogate_vuln", "clean_error"):
        assert math.isnan(get_surrogate(name)(empty))
    assert get_surrogate("clean_error")(record(clean_error=0.7)) == 0.7
    with_attack = record(
        HISTORY,
        {
            "attack": ["pgd", "pgd", "pgd"],
            "attacked": ["d", "sd", "d"],
            "task": ["d", "d", "s"],
            "rel_vuln": [3.0, 9.0, 7.0],
        },
    )
    assert get_surrogate("surrogate_vuln")(with_attack) == 3.0  # main task, single-task attack


def test_trial_record_helpers():
    r = record(HISTORY)
    assert r.epochs_with("vuln") == [1, 2, 3]
    assert r.epochs_with("grad_bound") == [0, 1]
    assert r.epochs_with("missing") == []
    assert r.last("vuln") == (1.2, 3)
    assert r.last("missing")[1] is None


def test_expand_over_recorded_epochs():
    names = [s.name for s in expand_surrogates([record(HISTORY)])]
    assert names == [
        "vuln@1",
        "vuln@2",
        "vuln@3",
        "surrogate_vuln",
        "clean_error",
        "grad_bound@0",
        "grad_bound@1",
    ]
    assert [s.name for s in expand_surrogates([record(HISTORY)], ["vuln@2", "grad_bound"])] == [
        "vuln@2",
        "grad_bound@0",
        "grad_bound@1",
    ]
    assert get_surrogate("vuln@2").description.endswith(" at epoch 2")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nope", "unknown surrogate 'nope'; choose from clean_error, grad_bound"),
        ("vuln", "write vuln@<epoch>"),
        ("vuln@x", "write vuln@<epoch>"),
        ("clean_error@1", "has no epoch"),
    ],
)
def test_bad_names(name, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        get_surrogate(name)


def test_registry_rejects_duplicates_and_bad_specs():
    with pytest.raises(ValueError, match="already registered"):
        register_surrogate("clean_error", description="x")(lambda t: 0.0)
    with pytest.raises(ValueError, match="direction"):
        register_surrogate("x", description="x", direction="up")
    with pytest.raises(ValueError, match="history column"):
        register_surrogate("x", description="x", per_epoch=True)


def test_a_new_surrogate_is_one_function(monkeypatch):
    monkeypatch.setattr(sur, "SURROGATES", dict(SURROGATES))

    @register_surrogate("neg_vuln3", description="minus vuln at epoch 3", direction="higher")
    def neg_vuln3(trial: TrialRecord) -> float:
        return -trial.at_epoch("vuln", 3)

    table = analyze(fake_run(), n_resamples=9).set_index("surrogate")
    assert "neg_vuln3" in table.index  # analysed without any other change
    row = table.loc["neg_vuln3"]
    assert row["pearson_r"] == pytest.approx(-1.0)
    assert row["regret"] == 0.0  # direction="higher": the largest value is predicted best

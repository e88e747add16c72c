"""The one fraction parser and the one weights parser/formatter (hand-computed values)."""

from __future__ import annotations

import math

import pytest

from rts.tasks.parsing import parse_fraction
from rts.tasks.weights import format_weights, is_uniform, parse_weights, weights_key


@pytest.mark.parametrize(
    ("text", "value"),
    [("8/255", 8 / 255), (" 2 / 255 ", 2 / 255), ("0.03", 0.03), ("1e-2", 0.01), (4, 4.0)],
)
def test_parse_fraction_reads_numbers_and_fractions(text, value):
    assert parse_fraction(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["8//255", "1/0", "abc", "", True, "inf", None, "__import__"])
def test_parse_fraction_rejects_everything_else(bad):
    with pytest.raises(ValueError, match="expected a"):
        parse_fraction(bad)


def test_parse_weights_accepts_every_written_form():
    want = {"s": 1.0, "d": 0.1}
    assert parse_weights("s=1,d=0.1") == want
    assert parse_weights('{"s": 1, "d": 0.1}') == want
    assert parse_weights([1, 0.1], "sd") == want
    assert parse_weights({"s": 1, "d": 0.1}, "sdn") == want
    assert parse_weights(None) == parse_weights("") == parse_weights("uniform") == {}
    assert parse_weights(math.nan) == {}


@pytest.mark.parametrize(
    ("weights", "tasks", "match"),
    [
        ("s:1", None, "task=weight pairs"),
        ("x=1", None, "unknown task"),
        ("n=1", "sd", "not in tasks"),
        ([1.0], "sd", "one per task"),
        ("s=nan", None, "finite"),
    ],
)
def test_parse_weights_names_what_is_wrong(weights, tasks, match):
    with pytest.raises(ValueError, match=match):
        parse_weights(weights, tasks)


def test_format_and_key_agree_on_uniform_and_normalise():
    assert format_weights({"s": 2, "d": 2}) == "uniform"
    assert is_uniform({"s": 2, "d": 2}) and not is_uniform({"s": 1, "d": 2})
    assert format_weights("d=0.1,s=1", "sd") == "s=1,d=0.1"  # registry (tasks) order
    assert weights_key({"s": 1, "d": 3}, "sd") == "s=0.25,d=0.75"
    assert weights_key({"s": 5, "d": 5}, "sd") == ""

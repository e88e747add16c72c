"""The fake trial's noisy surrogates: deterministic, of the asked size, stage 2 left exact."""

from __future__ import annotations

import statistics

import pytest

from rts.search.config.convert import load_config, resolve
from rts.search.engine.space import Space
from rts.search.engine.trial import TrialSession, build_spec
from tests.search.fake_trial import FakeTrial, fake_vulnerability, surrogate_error
from tests.search.tiny import EARLY_SCREEN


def reports(trial: FakeTrial, spec) -> list[dict]:
    out: list[dict] = []
    trial(spec, TrialSession("t", lambda metrics, write=None: out.append(dict(metrics))))
    return out


def test_noise_is_deterministic_sized_and_spares_stage2():
    overrides = [*EARLY_SCREEN, "search.encoders=[resnet18]", "search.pool=sDnE", "stage2.epochs=2"]
    cfg = resolve(load_config(None, overrides))  # stage 1 screens early: noisy surrogates
    space = Space.from_config(cfg)
    cands = [space.candidate(a, "uniform", "resnet18") for a in ("s", "D", "nE", "sDnE")]
    noisy, clean = FakeTrial(noise=0.5), FakeTrial()
    for cand in cands:
        s1 = build_spec(cfg, cand, 1)
        a, b, exact = reports(noisy, s1), reports(noisy, s1), reports(clean, s1)
        assert a == b  # the same draw every time
        for got, want in zip(a[1:], exact[1:], strict=True):
            err = (got["vuln"] - want["vuln"]) / 0.5
            assert err == pytest.approx(surrogate_error(cand, s1.seed, got["epoch"], "vuln"))
        s2 = build_spec(cfg, cand, 2)
        assert reports(noisy, s2)[-1]["vuln"] == reports(clean, s2)[-1]["vuln"]
        assert reports(clean, s2)[-1]["vuln"] == pytest.approx(
            max(fake_vulnerability(cand, "resnet18", 2) * (1 - 0.05 * i) for i in range(3))
        )
    # Standard normal over many keys; another seed draws differently.
    draws = [surrogate_error(cands[0], seed, 1, "vuln") for seed in range(2000)]
    assert abs(statistics.fmean(draws)) < 0.1
    assert statistics.stdev(draws) == pytest.approx(1.0, abs=0.08)
    assert surrogate_error(cands[0], 0, 1, "vuln") != surrogate_error(cands[0], 1, 1, "vuln")

"""A sampler fault for the tests: one that only ever proposes the same candidate."""

from __future__ import annotations

import optuna


class StuckSampler(optuna.samplers.RandomSampler):
    """A sampler settled on one candidate: every parameter at its first choice or lower bound."""

    def sample_independent(self, study, trial, param_name, param_distribution):
        if isinstance(param_distribution, optuna.distributions.CategoricalDistribution):
            return param_distribution.choices[0]
        return param_distribution.low

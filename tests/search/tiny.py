"""The smallest real search the tests run: two candidates (d, d+s), one epoch per stage."""

from __future__ import annotations

EARLY_SCREEN: tuple[str, ...] = ("stage1.design=sampler", "stage1.model=none")
"""Stage 1 as the sampler's proposals screened early (ASHA or rung barriers), stage 2 taking the
best observed: the machinery tests of samplers, pruning and batches exercise this, not the
default (the pairs design trained in full, the HOA model, stage 2 reusing it)."""

TINY_REAL_SEARCH: tuple[str, ...] = (
    *EARLY_SCREEN,
    "data.size=32",
    "data.n=24",
    "search.pool=s",
    "search.sampler=grid",
    "search.encoders=[resnet18]",
    "stage1.epochs=1",
    "stage1.decoder_width=8",
    "stage1.batch_size=8",
    "stage2.top_k=1",
    "stage2.epochs=1",
    "stage2.decoder_width=8",
    "stage2.batch_size=8",
    "attack.images=4",
    "attack.cheap_steps=1",
    "attack.steps=1",
)
"""``key=value`` overrides (add a ``name=``): real training and attacks, 4 attacked images; the
grid sampler's two candidates screened early (:data:`EARLY_SCREEN`)."""

TINY_FAKE_GRID: tuple[str, ...] = (
    *EARLY_SCREEN,
    "search.pool=sD",
    "search.max_aux=2",
    "search.sampler=grid",
    "search.encoders=[resnet18]",
    "stage1.epochs=1",
    "stage1.scheduler=fifo",
    "stage2.epochs=1",
    "stage2.uniform_twins=false",
)
"""Overrides for an exhaustive search of the 4 subsets of ``sD`` on fake trials, one epoch per
stage, no uniform twins (add ``name=`` and ``stage2.top_k=``)."""

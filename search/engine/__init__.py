"""The search engine: runs stages of trials on Ray Tune, proposed by Optuna.

Modules in layers, bottom to top; each imports only modules of rows below its own (an import
inside a function too: ``tests/test_layers.py`` reads them all).

1. ``faults`` (trial fault vs infrastructure fault), ``halving`` (rungs and successive halving),
   ``space`` (:class:`~.space.Candidate`, :class:`~.space.Space`: what a trial trains and how a
   study trial proposes one), ``storage`` (URIs, staging copies, the journal's travels),
   ``session`` (the Ray a search starts or joins);
2. ``paths`` (the run folder's layout and trial names), ``rows`` (every reported row kept in the
   trial's checkpoint);
3. ``trial`` (one trial without Ray: spec, session, the built-in trial function), ``plan``
   (the cost model and ``--dry-run``);
4. ``records`` (deterministic stage 1's rung and batch records), ``trainable`` (Ray's function
   trainable around a trial function), ``progress`` (live status callback), ``tracking``
   (TensorBoard, MLflow, W&B callbacks);
5. ``samplers`` (Optuna samplers, the study in the run's journal, the one redraw routine);
6. ``searcher`` (asynchronous stage 1's Ray ``Searcher`` over the study);
7. ``experiment`` (one Ray Tune experiment: start, restore, check that it finished);
8. ``batches`` (deterministic stage 1: batches, rung barriers, tells in a fixed order);
9. ``stages`` (``run_stage1``, ``run_stage2``).

The path of one trial: config → ``space`` (a candidate) → ``samplers``/``searcher`` (proposed
by Optuna) → ``experiment`` (a Tune trial) → ``trainable`` (config → spec, checkpoints) →
``trial`` (train, attack, report) → back through ``trainable`` to Ray, and the tables are built
from Ray's results (``rts.search.results.collect``; deterministic mode via ``records``).
"""

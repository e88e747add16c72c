"""Each auxiliary task's estimated effect on the main task, from a run's stage-1 trials.

The marginal-vulnerability table a user wants: "adding ``s`` changes ``d``'s vulnerability by
+0.12 [0.07, 0.17]", estimated by the task-effect model (:mod:`rts.search.results.effects`) over
every stage-1 trial that finished, whichever subsets they were.
"""

from __future__ import annotations

import pandas as pd

from rts.search.analysis.rundata import FINISHED, RunData
from rts.search.results.effects import EffectModel, fit_effects


def task_effects(run: RunData, kind: str = "additive") -> EffectModel | None:
    """The effect model of the main task's vulnerability over the run's surrogate trials;
    ``None`` with fewer than 3 usable trials or several main tasks."""
    t = run.surrogate_trials()
    t = t[(t["status"] == FINISHED) & t["vuln"].notna()]
    mains = set(t["main"])
    if len(t) < 3 or len(mains) != 1:
        return None
    main = mains.pop()
    aux = [tasks.replace(main, "") for tasks in t["tasks"]]
    pool = "".join(sorted(set("".join(aux)), key="".join(aux).index))
    if not pool:
        return None
    return fit_effects(aux, list(t["vuln"]), pool, kind)


def effects_display(model: EffectModel, main: str) -> pd.DataFrame:
    """The effects as a table a person reads: term, effect with its interval."""
    rows = []
    for r in model.table().itertuples():
        what = f"adding {r.term}" if len(r.term) == 1 else f"{r.term[0]} and {r.term[1]} together"
        interval = "" if pd.isna(r.low) else f" [{r.low:+.3g}, {r.high:+.3g}]"
        rows.append(
            {"term": what, f"effect on {main}'s vulnerability": f"{r.effect:+.3g}{interval}"}
        )
    return pd.DataFrame(rows)

"""Search algorithms with Ray Tune's names: the ``Searcher`` base, grid and random search,
``ConcurrencyLimiter``, and ``OptunaSearch`` in :mod:`prefect_tune.search.optuna`
(``pip install prefect-tune[optuna]``).

Decision cores: each suggests from what it was told, and keeps its state as a versioned JSON
document (``to_state`` / ``from_state``), so that a restore ends with exactly the trials asked
for, none suggested twice and none lost.

Wired: ``TuneConfig(search_alg=...)`` runs any of them on the driver, each suggestion stored
in the experiment's ``search.json`` before its trial is dispatched
(``prefect_tune/engine/_suggestions.py``); without one, the Tuner's own grid and random search
runs, seeded by ``TuneConfig(seed=...)``.

    >>> from prefect_tune.search import ConcurrencyLimiter  # was: from ray.tune.search import ...
"""

from prefect_tune.search._basic_variant import BasicVariantGenerator
from prefect_tune.search._searcher import ConcurrencyLimiter, Searcher, Suggestion

__all__ = ["BasicVariantGenerator", "ConcurrencyLimiter", "Searcher", "Suggestion"]

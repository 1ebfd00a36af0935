"""Search algorithms with Ray Tune's names: the ``Searcher`` base, grid and random search,
``ConcurrencyLimiter``, and ``OptunaSearch`` in :mod:`prefect_tune.search.optuna`
(``pip install prefect-tune[optuna]``).

Decision cores: each suggests from what it was told, and keeps its state as a versioned JSON
document (``to_state`` / ``from_state``), so that a restore ends with exactly the trials asked
for, none suggested twice and none lost.

Wiring status: these are the decision cores only; ``TuneConfig(search_alg=...)`` lands next
and, until then, refuses a search algorithm with a ``ConfigError`` (the Tuner's own grid and
random search runs by default, seeded by ``TuneConfig(seed=...)``).

    >>> from prefect_tune.search import ConcurrencyLimiter  # was: from ray.tune.search import ...
"""

from prefect_tune.search._basic_variant import BasicVariantGenerator
from prefect_tune.search._searcher import ConcurrencyLimiter, Searcher, Suggestion

__all__ = ["BasicVariantGenerator", "ConcurrencyLimiter", "Searcher", "Suggestion"]

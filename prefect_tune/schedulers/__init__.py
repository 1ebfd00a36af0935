"""Trial schedulers with Ray Tune's names: FIFO, ASHA, the median stopping rule and PBT.

Decision cores: each sees every result of every trial and answers continue, pause or stop, from
the recorded results alone, with its state a versioned JSON document (``to_state`` /
``from_state``) so that a restore resumes it exactly.

Wiring status: these are the decision cores only; ``TuneConfig(scheduler=...)`` lands next and,
until then, refuses any scheduler but :class:`FIFOScheduler` with a ``ConfigError``.

    >>> from prefect_tune.schedulers import ASHAScheduler  # was: from ray.tune.schedulers import ...
    >>> ASHAScheduler(metric="loss", mode="min", max_t=81, grace_period=1).rungs[0][-1][0]
    1.0
"""

from prefect_tune.schedulers._asha import ASHAScheduler, AsyncHyperBandScheduler
from prefect_tune.schedulers._base import FIFOScheduler, TrialScheduler
from prefect_tune.schedulers._median import MedianStoppingRule
from prefect_tune.schedulers._pbt import Exploit, PopulationBasedTraining, explore

__all__ = [
    "ASHAScheduler",
    "AsyncHyperBandScheduler",
    "Exploit",
    "FIFOScheduler",
    "MedianStoppingRule",
    "PopulationBasedTraining",
    "TrialScheduler",
    "explore",
]

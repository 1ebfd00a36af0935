"""The fast path of trials on a ``DaskTaskRunner``: everything of prefect-tune that depends on
Prefect's internals, behind one switch, `fast_dispatch`.

On the fast path the driver sends each trial straight to the Dask cluster (`_dispatch`), and
each worker process builds Prefect's run context once and keeps it (`_worker`): Prefect's
context variables are set by hand around each task run, which Prefect's own task engine runs,
through a copy of its ``start`` that leaves out the tag concurrency slot request when no limit
exists (`_engine`). A trial then costs tens of milliseconds of overhead instead of hundreds.

Prefect's plain path is ``task_runner.submit(trial_task, parameters=...)``, as any Prefect flow
submits a task; it touches none of this package but `fast_dispatch`, which chooses it when the
setting ``PREFECT_TUNE_FAST_TRIAL_DISPATCH`` is false, or when the installed Prefect's code that
the fast path copies or relies on is not the code it was written against
(`_engine.internals_are_known`), or is gone. The other modules are imported only once the
setting allows the fast path.
"""

from prefect_tune.prefect._fast._switch import CHECKED_PREFECT_VERSION, fast_dispatch

__all__ = ["CHECKED_PREFECT_VERSION", "fast_dispatch"]

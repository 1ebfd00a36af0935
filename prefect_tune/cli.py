"""`prefect-tune`: look at stored experiments from a shell, on any storage prefect-tune reaches.

It reads only the small state files (never checkpoint payloads) and writes nothing::

    prefect-tune ls ~/prefect_tune_results
    prefect-tune show ~/prefect_tune_results/digits
    prefect-tune best s3://bucket/tune/digits --option endpoint_url=http://127.0.0.1:9000 --json
    prefect-tune best digits --block tuning --metric acc --mode max --scope last-5-avg

Errors print one line to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from prefect_tune.exceptions import (
    ConfigError,
    MetricNotReportedError,
    PrefectTuneError,
    StateError,
    StorageNotFoundError,
)
from prefect_tune.results import ResultGrid
from prefect_tune.session import AUTO_FIELDS
from prefect_tune.state import ExperimentStore, TrialState, TrialStatus, read_lease
from prefect_tune.storage import StorageSpec, TuneStorage, redact

_SCOPES = ("last", "avg", "all", "last-5-avg", "last-10-avg")
_MAX_CONFIG_COLUMNS = 5


def _parse_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            # The value may be a secret: never echo it.
            raise ConfigError("Each --option must be NAME=VALUE; one has no name or no '='.")
        try:
            options[key.strip()] = json.loads(text)
        except ValueError:
            options[key.strip()] = text
    return options


def _load_block(name: str) -> TuneStorage:
    try:
        block = TuneStorage.load(name)
    except ValueError as exc:
        raise ConfigError(f"Could not load the TuneStorage block {name!r}: {exc}") from exc
    if not isinstance(block, TuneStorage):  # load() is also awaitable; here it ran synchronously
        raise ConfigError(f"The block {name!r} is not a TuneStorage block.")
    return block


def _spec(args: argparse.Namespace, hidden: list[str]) -> StorageSpec:
    """The storage location the command names; its option values are added to ``hidden``."""
    options = _parse_options(args.option)
    path = args.path or ""
    if args.block is None:
        if not path:
            raise ConfigError("Give a storage path or URL, or --block NAME.")
        spec = StorageSpec(path, options)
    elif options:
        raise ConfigError("Give either --block or --option, not both: keep options in the block.")
    else:
        root = _load_block(args.block).spec()
        if not path:
            spec = root
        elif "://" in path or path.startswith(("/", "~")):
            spec = StorageSpec(path, root.options)
        else:
            spec = root.child(path)
    hidden.extend(_strings(spec.options))
    return spec


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if len(value) >= 4 else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


# -- formatting ----------------------------------------------------------------------------------


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 24 else text[:21] + "..."


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    lines = [
        indent
        + "  ".join(
            str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)
        ).rstrip()
        for line in (headers, *rows)
    ]
    return "\n".join(lines)


def _counts(statuses: Sequence[TrialStatus]) -> str:
    return " ".join(f"{s.value}={statuses.count(s)}" for s in TrialStatus if s in statuses) or "-"


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _key_columns(trials: Sequence[TrialState]) -> list[str]:
    """Config keys whose values differ between trials (all keys for a single trial)."""
    configs = [_flat(t.config) for t in trials]
    keys = list(dict.fromkeys(k for c in configs for k in c))
    if len(configs) > 1:
        keys = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
    return keys[:_MAX_CONFIG_COLUMNS]


# -- commands ------------------------------------------------------------------------------------


def _ls(args: argparse.Namespace, hidden: list[str]) -> int:
    storage = _spec(args, hidden).open()
    names = [""] if ExperimentStore(storage).exists() else storage.list_dir("")
    rows = []
    for name in names:
        store = ExperimentStore(storage.sub(name) if name else storage)
        if name.startswith(".") or not store.exists():
            continue
        label = name or storage.url.rstrip("/").rsplit("/", 1)[-1]
        try:
            definition = store.read_definition()
            state = store.read_state()
        except StateError as exc:
            rows.append([label, "?", f"unreadable ({type(exc).__name__})", "-"])
            continue
        trials = state.trials if state is not None else []
        total = definition.total_trials
        count = f"{len(trials)}/{total}" if total is not None and total != len(trials) else ""
        rows.append(
            [
                label,
                count or str(len(trials)),
                _counts([t.status for t in trials]),
                _when(state.updated_at if state is not None else definition.created_at),
            ]
        )
    if not rows:
        if not storage.exists(""):
            raise StorageNotFoundError(f"Nothing is stored at {storage.url}.")
        print(f"No experiments under {storage.url}.")
        return 0
    print(_table(["EXPERIMENT", "TRIALS", "STATUS", "UPDATED"], rows))
    return 0


def _show(args: argparse.Namespace, hidden: list[str]) -> int:
    store = ExperimentStore(_spec(args, hidden).open())
    definition = store.read_definition()
    state, trials = store.load_trials()
    lease = read_lease(store.storage)
    metric = definition.metric
    total = definition.total_trials
    print(f"Experiment  {definition.name}  ({store.uri})")
    print(f"Trainable   {definition.trainable}")
    print(f"Metric      {f'{metric} ({definition.mode})' if metric else '-'}")
    print(
        f"Samples     num_samples={definition.num_samples}, "
        f"trials={total if total is not None else 'unbounded'}, seed={definition.seed}"
    )
    if lease is not None and lease.is_live():
        print(
            f"Driver      {lease.describe()}, lease renewed {time.time() - lease.renewed_at:.0f} s"
            f" ago (ttl {lease.ttl_s:.0f} s)"
        )
    else:
        print("Driver      none live")
    print(f"Updated     {_when(state.updated_at if state else None)}")
    if state is not None and state.flow_runs:
        print("\nFlow runs:")
        runs = [
            [
                str(i),
                r.flow_run_name or "-",
                r.flow_run_id or "-",
                str(r.run_count),
                _when(r.started_at),
            ]
            for i, r in enumerate(state.flow_runs, 1)
        ]
        print(_table(["#", "NAME", "ID", "RUN", "STARTED"], runs, "  "))
    print(f"\nTrials: {len(trials)} ({_counts([t.status for t in trials])})")
    if trials:
        keys = _key_columns(trials)
        rows = []
        for t in trials:
            last = t.last_result or {}
            config = _flat(t.config)
            checkpoint = t.latest_checkpoint
            rows.append(
                [t.trial_id, t.status.value]
                + [_value(config.get(k)) for k in keys]
                + ([_value(last.get(metric))] if metric else [])
                + [
                    _value(last.get("training_iteration")),
                    checkpoint.dir_name if checkpoint else "-",
                ]
            )
        headers = ["TRIAL", "STATUS", *keys, *([metric] if metric else []), "ITER", "CHECKPOINT"]
        print(_table(headers, rows, "  "))
    errored = [t for t in trials if t.error and t.status is not TrialStatus.TERMINATED]
    if errored:
        print("\nErrors:")
        for t in errored:
            print(f"  {t.trial_id}: {t.error}")
    return 0


def _best(args: argparse.Namespace, hidden: list[str]) -> int:
    store = ExperimentStore(_spec(args, hidden).open())
    definition = store.read_definition()
    grid = ResultGrid(store, definition=definition)
    if not len(grid):
        raise StateError(f"The experiment at {store.uri} has no trials yet.")
    best = grid.get_best_result(metric=args.metric, mode=args.mode, scope=args.scope)
    metric = args.metric or definition.metric
    mode = args.mode or definition.mode
    best_checkpoint = None
    if metric and mode:
        with contextlib.suppress(MetricNotReportedError):  # no checkpoint reported it
            best_checkpoint = best.get_best_checkpoint(metric, mode).path
    payload = {
        "trial_id": best.trial_id,
        "status": best.status.value,
        "metric": metric,
        "mode": mode,
        "scope": args.scope,
        "config": best.config,
        "metrics": best.metrics,
        "checkpoint": best.checkpoint.path if best.checkpoint is not None else None,
        "best_checkpoint": best_checkpoint,
        "path": best.path,
    }
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
        return 0
    shown = {k: v for k, v in best.metrics.items() if k not in AUTO_FIELDS}
    print(f"Best trial  {best.trial_id} ({best.status.value}) by {metric} ({mode}, {args.scope})")
    print(f"Config      {json.dumps(best.config, default=str)}")
    print(f"Metrics     {json.dumps(shown, default=str)}")
    print(f"Iterations  {_value(best.metrics.get('training_iteration'))}")
    print(f"Checkpoint  {payload['checkpoint'] or '-'}")
    if best_checkpoint and best_checkpoint != payload["checkpoint"]:
        print(f"Best by {metric}  {best_checkpoint}")
    print(f"Trial dir   {best.path}")
    return 0


# -- entry point ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    storage = argparse.ArgumentParser(add_help=False)
    storage.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="an fsspec storage option (VALUE parsed as JSON when it can be); repeatable",
    )
    storage.add_argument("--block", metavar="NAME", help="a saved TuneStorage block to use")
    parser = argparse.ArgumentParser(
        prog="prefect-tune", description="Look at experiments stored by prefect-tune."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ls = commands.add_parser("ls", parents=[storage], help="list the experiments under a root")
    ls.add_argument("path", nargs="?", help="storage root: a path or URL (the block's root)")
    show = commands.add_parser("show", parents=[storage], help="an experiment and its trials")
    show.add_argument("path", help="the experiment's directory (with --block: its name)")
    best = commands.add_parser("best", parents=[storage], help="the best trial of an experiment")
    best.add_argument("path", help="the experiment's directory (with --block: its name)")
    best.add_argument("--metric", help="default: the experiment's TuneConfig.metric")
    best.add_argument("--mode", choices=("min", "max"), help="default: TuneConfig.mode")
    best.add_argument("--scope", choices=_SCOPES, default="last")
    best.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=_ls)
    show.set_defaults(handler=_show)
    best.set_defaults(handler=_best)
    return parser


def _one_line(exc: BaseException, hidden: Sequence[str]) -> str:
    text = " ".join(redact(str(exc)).split())
    for secret in sorted(set(hidden), key=len, reverse=True):
        text = text.replace(secret, "***")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``prefect-tune`` with ``argv`` (default: the command line); returns the exit status.

    Examples:
        >>> main(["best", "~/prefect_tune_results/digits", "--json"])  # doctest: +SKIP
        0
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage and the problem
        return exc.code if isinstance(exc.code, int) else 2
    hidden: list[str] = []
    handler: Callable[[argparse.Namespace, list[str]], int] = args.handler
    try:
        return handler(args, hidden)
    except (PrefectTuneError, OSError, ValueError) as exc:
        print(f"prefect-tune: error: {_one_line(exc, hidden)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`prefect-tune ls | show | best`: stored experiments, read from any storage; writes nothing.

    prefect-tune ls ~/prefect_tune_results
    prefect-tune show s3://bucket/tune/digits --option endpoint_url=http://127.0.0.1:9000
    prefect-tune best digits --block tuning --metric acc --mode max --scope last-5-avg --json

It reads only the small state files, never checkpoints. Errors: one line on stderr, status 2.
``ls`` lists the experiments it can read and marks the others, each with one line on stderr
saying why, with status 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from prefect_tune.engine import AUTO_FIELDS
from prefect_tune.exceptions import ConfigError, PrefectTuneError, StateError, StorageNotFoundError
from prefect_tune.results import ResultGrid
from prefect_tune.state import ExperimentStore, Lease, TrialState, TrialStatus, read_lease
from prefect_tune.storage import (
    StorageSpec,
    TuneStorage,
    redact,
    refuse_block_with_options,
    resolve_spec,
)

_SCOPES = ("last", "avg", "all", "last-5-avg", "last-10-avg")


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
    if args.block is None and not args.path:
        raise ConfigError("Give a storage path or URL, or --block NAME.")
    # Refused before the block is loaded, which may have to reach the Prefect server.
    refuse_block_with_options(args.block, options)
    block = _load_block(args.block) if args.block is not None else None
    spec = resolve_spec(args.path or "", options, block)
    hidden.extend(_strings(spec.options))
    return spec


def _strings(value: Any) -> list[str]:
    """Every string in ``value``, nested ones too (short ones would mask ordinary words)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) and len(value) >= 4 else []


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else f"{dt.datetime.fromtimestamp(timestamp):%Y-%m-%d %H:%M:%S}"


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 24 else text[:21] + "..."


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    widths = [max(map(len, column)) for column in zip(headers, *rows, strict=False)]
    return "\n".join(
        indent + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    )


def _fields(pairs: Sequence[tuple[str, str]]) -> None:
    for label, text in pairs:
        print(f"{label:<12}{text}")


def _counts(statuses: Sequence[TrialStatus]) -> str:
    return " ".join(f"{s.value}={statuses.count(s)}" for s in TrialStatus if s in statuses) or "-"


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(
            _flat(value, f"{prefix}{key}/") if isinstance(value, dict) else {prefix + key: value}
        )
    return out


def _key_columns(trials: Sequence[TrialState]) -> list[str]:
    """Up to 5 config keys whose values differ between trials (all keys for a single trial)."""
    configs = [_flat(t.config) for t in trials]
    keys = list(dict.fromkeys(k for c in configs for k in c))
    if len(configs) > 1:
        keys = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
    return keys[:5]


def _ls(args: argparse.Namespace, hidden: list[str]) -> int:
    storage = _spec(args, hidden).open()
    names = [""] if ExperimentStore(storage).exists() else storage.list_dir("")
    rows = []
    unreadable: list[str] = []
    for name in names:
        store = ExperimentStore(storage.sub(name) if name else storage)
        if name.startswith(".") or not store.exists():
            continue
        label = name or storage.url.rstrip("/").rsplit("/", 1)[-1]
        try:
            definition = store.read_definition()
            state = store.read_state()
        except StateError as exc:  # damaged or too new: list the others all the same
            rows.append([label, "?", "UNREADABLE", "-"])
            unreadable.append(f"prefect-tune: warning: {label}: {_one_line(exc, hidden)}")
            continue
        trials = state.trials if state is not None else []
        total = definition.total_trials
        count = f"{len(trials)}/{total}" if total not in (None, len(trials)) else str(len(trials))
        updated = _when(state.updated_at if state is not None else definition.created_at)
        rows.append([label, count, _counts([t.status for t in trials]), updated])
    if not rows:
        if not storage.exists(""):
            raise StorageNotFoundError(f"Nothing is stored at {storage.url}.")
        print(f"No experiments under {storage.url}.")
        return 0
    print(_table(["EXPERIMENT", "TRIALS", "STATUS", "UPDATED"], rows))
    for line in unreadable:
        print(line, file=sys.stderr)
    return 1 if unreadable else 0


def _driver(lease: Lease | None) -> str:
    if lease is not None and lease.is_live():
        ago = time.time() - lease.renewed_at
        return f"{lease.describe()}, lease renewed {ago:.0f} s ago (ttl {lease.ttl_s:.0f} s)"
    if lease is not None and not lease.released:  # it stopped without releasing: it crashed
        return f"none live (last: {lease.describe()}, renewed {_when(lease.renewed_at)})"
    return "none live"


def _trial_row(trial: TrialState, keys: Sequence[str], metric: str | None) -> list[str]:
    last, config, checkpoint = trial.last_result or {}, _flat(trial.config), trial.latest_checkpoint
    values = [config.get(k) for k in keys] + ([last.get(metric)] if metric else [])
    values.append(last.get("training_iteration"))
    cells = [trial.trial_id, trial.status.value, *map(_value, values)]
    return [*cells, checkpoint.dir_name if checkpoint else "-"]


def _show(args: argparse.Namespace, hidden: list[str]) -> int:
    store = ExperimentStore(_spec(args, hidden).open())
    definition = store.read_definition()
    state, trials = store.load_trials()
    metric, seed = definition.metric, definition.seed
    total = definition.total_trials if definition.total_trials is not None else "unbounded"
    _fields(
        [
            ("Experiment", f"{definition.name}  ({store.uri})"),
            ("Trainable", definition.trainable),
            ("Metric", f"{metric} ({definition.mode})" if metric else "-"),
            ("Samples", f"num_samples={definition.num_samples}, trials={total}, seed={seed}"),
            ("Driver", _driver(read_lease(store.storage))),
            ("Updated", _when(state.updated_at if state else None)),
        ]
    )
    if state is not None and state.flow_runs:
        print("\nFlow runs:")
        runs = [
            [str(i), r.flow_run_name or "-", r.flow_run_id or "-", str(r.run_count)]
            + [_when(r.started_at)]
            for i, r in enumerate(state.flow_runs, 1)
        ]
        print(_table(["#", "NAME", "ID", "RUN", "STARTED"], runs, "  "))
    print(f"\nTrials: {len(trials)} ({_counts([t.status for t in trials])})")
    if trials:
        keys = _key_columns(trials)
        headers = ["TRIAL", "STATUS", *keys, *([metric] if metric else []), "ITER", "CHECKPOINT"]
        print(_table(headers, [_trial_row(t, keys, metric) for t in trials], "  "))
    failed = [t for t in trials if t.error and t.status is not TrialStatus.TERMINATED]
    if failed:
        print("\nErrors:", *(f"  {t.trial_id}: {t.error}" for t in failed), sep="\n")
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
    payload = {
        "trial_id": best.trial_id,
        "status": best.status.value,
        "metric": metric,
        "mode": mode,
        "scope": args.scope,
        "config": best.config,
        "metrics": best.metrics,
        "checkpoint": best.checkpoint.path if best.checkpoint is not None else None,
        "path": best.path,
    }
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
        return 0
    shown = {k: v for k, v in best.metrics.items() if k not in AUTO_FIELDS}
    by = f"{metric} ({mode}, {args.scope})"
    _fields(
        [
            ("Best trial", f"{best.trial_id} ({best.status.value}) by {by}"),
            ("Config", json.dumps(best.config, default=str)),
            ("Metrics", json.dumps(shown, default=str)),
            ("Iterations", _value(best.metrics.get("training_iteration"))),
            ("Checkpoint", payload["checkpoint"] or "-"),
            ("Trial dir", best.path),
        ]
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    storage = argparse.ArgumentParser(add_help=False)
    option_help = "an fsspec storage option, VALUE parsed as JSON if it can be; repeatable"
    storage.add_argument("--option", action="append", metavar="KEY=VALUE", help=option_help)
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
    try:
        return int(args.handler(args, hidden))
    except (PrefectTuneError, OSError, ValueError) as exc:
        print(f"prefect-tune: error: {_one_line(exc, hidden)}", file=sys.stderr)
        return 2

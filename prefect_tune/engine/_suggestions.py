"""`SearchRecord`: a search algorithm on the driver, its every suggestion stored before dispatch.

``TuneConfig(search_alg=...)`` runs through this record. The controller asks it for the config of
each new trial index as a slot frees up; it tells it each trial's end, and the decision desk's
channel (which already brings every result row to the driver) hands it the rows on the way.

Exact resume: a suggestion is *recorded before dispatch*, never re-made. Before the controller
submits a new trial, ``search.json`` is rewritten atomically with that suggestion (index, trial
id, config) and the searcher's whole state (``Searcher.to_state()``: versioned JSON, no
pickles). So after a SIGKILL at any instant:

- every trial that ever ran was recorded first; a restore finds its config here even when
  neither its ``trial.json`` nor the snapshot were written, and never asks the searcher for
  that index again (no suggestion lost, none made twice);
- trials that ended after the last write of ``search.json`` are told to the restored searcher
  again, in index order, from their stored final result (the stored trials are the truth);
- the restored searcher continues from the stored state: with ``OptunaSearch`` the study is
  rebuilt by replaying the stored trials (configs and final results) into a new study with the
  same seed.

Re-making a lost suggestion deterministically was the alternative; it needs every searcher to
replay the exact interleaving of results it saw, which the order in which Dask workers finish
does not give after a crash. Recording costs one small atomic write per trial (the whole
searcher state: a few hundred bytes per trial, so quadratic in the number of trials; see the
figures in README "Schedulers and search").

    >>> from prefect_tune.storage import StorageSpec
    >>> from prefect_tune.search import BasicVariantGenerator
    >>> from prefect_tune import space
    >>> searcher = BasicVariantGenerator(random_state=0)
    >>> _ = searcher.set_search_properties(None, None, {"x": space.randint(0, 9)}, num_samples=1)
    >>> record = SearchRecord(searcher, StorageSpec("memory://doc/search").open())
    >>> record.load(stored_trials=0)
    >>> isinstance(record.suggest(0, "t0"), dict), record.suggest(1, "t1")
    (True, 'FINISHED')
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from prefect_tune.exceptions import (
    DamagedStateError,
    DecisionStateMismatchError,
    UnsupportedSchemaVersionError,
)

__all__ = ["FINISHED", "SEARCH_FILE", "SearchRecord", "is_custom_search"]

#: Where the search record is stored, relative to the experiment.
SEARCH_FILE = "search.json"

#: Version of the record's layout (the searcher's own state has its own version inside).
SEARCH_SCHEMA_VERSION = 1

#: What a searcher returns once it has no more configs (``Searcher.FINISHED``).
FINISHED = "FINISHED"


def is_custom_search(search_alg: Any) -> bool:
    """Whether ``search_alg`` needs a search record: anything but None or the default
    ``BasicVariantGenerator()``, which the engine's pure generator runs without one."""
    if search_alg is None:
        return False
    from prefect_tune.search import BasicVariantGenerator

    if type(search_alg) is BasicVariantGenerator:
        default = BasicVariantGenerator().settings()
        mine = search_alg.settings()
        # Bound to the Tuner's space, its settings also name the space and seed: compare the
        # arguments a user gives only.
        keys = ("points_to_evaluate", "random_state")
        return any(mine.get(k) != default.get(k) for k in keys)
    return True


def listens_to_results(searcher: Any) -> bool:
    """Whether the searcher (or the one a ConcurrencyLimiter wraps) overrides
    ``on_trial_result``: only then are result rows carried to it."""
    from prefect_tune.search import ConcurrencyLimiter, Searcher

    while isinstance(searcher, ConcurrencyLimiter):
        searcher = searcher.searcher
    return type(searcher).on_trial_result is not Searcher.on_trial_result


def stored_search_kind(storage: Any) -> str:
    """The class name of the search algorithm ``search.json`` was written by, for messages
    ("?" when it cannot be read: the record is checked in full when it is loaded)."""
    try:
        kind = json.loads(storage.read_bytes(SEARCH_FILE)).get("kind")
    except Exception:
        return "?"
    return kind if isinstance(kind, str) and kind.isidentifier() else "?"


class SearchRecord:
    """A searcher and the record of what it suggested, stored in ``search.json``.

    Thread-safe: the controller's thread asks for suggestions and reports ends, the decision
    desk's thread hands rows; every call to the searcher is made under one lock, so the
    searcher itself sees one call at a time.

    Args:
        searcher: A ``prefect_tune.search.Searcher`` whose ``set_search_properties`` was called.
        storage: The experiment's storage.
    """

    def __init__(self, searcher: Any, storage: Any) -> None:
        self.searcher = searcher
        self.storage = storage
        self._lock = threading.Lock()
        self._suggested: dict[int, tuple[str, dict[str, Any]]] = {}
        self._told: set[str] = set()
        self._finished = False
        self._dirty = False

    @property
    def kind(self) -> str:
        return type(self.searcher).__name__

    @property
    def finished(self) -> bool:
        """The searcher said FINISHED: no more trials are created."""
        return self._finished

    @property
    def next_index(self) -> int:
        """One past the highest index suggested so far."""
        return max(self._suggested, default=-1) + 1

    def recorded(self, index: int) -> dict[str, Any] | None:
        """The config recorded for trial ``index``, or None when none was suggested."""
        entry = self._suggested.get(index)
        return None if entry is None else json.loads(json.dumps(entry[1]))

    def recorded_id(self, index: int) -> str | None:
        """The trial id recorded with suggestion ``index``."""
        entry = self._suggested.get(index)
        return None if entry is None else entry[0]

    # -- stored form -------------------------------------------------------------------------

    def _document(self) -> dict[str, Any]:
        return {
            "schema_version": SEARCH_SCHEMA_VERSION,
            "kind": self.kind,
            "finished": self._finished,
            "suggested": [[i, t, c] for i, (t, c) in sorted(self._suggested.items())],
            "told": sorted(self._told),
            "searcher": self.searcher.to_state(),
        }

    def _write(self) -> None:
        data = json.dumps(self._document(), allow_nan=True).encode()
        self.storage.write_bytes(SEARCH_FILE, data)
        self._dirty = False

    def save(self) -> None:
        """Writes the record if trials ended since it was last written."""
        with self._lock:
            if self._dirty:
                self._write()

    def load(self, stored_trials: int) -> None:
        """Takes back the stored record, if any. Only reads: the record is written at the first
        suggestion, under the driver's lease.

        Args:
            stored_trials: How many trials the experiment already has: an experiment that
                ran trials without a search record ran without this search algorithm.

        Raises:
            DecisionStateMismatchError: the record was written by another search algorithm or
                with other settings, or the experiment ran without one.
            UnsupportedSchemaVersionError: the record is from a newer prefect-tune.
            DamagedStateError: ``search.json`` is not a valid record; it names the file.
        """
        with self._lock:
            here = self.storage.full_path("")
            owner = getattr(self.searcher, "_prefect_tune_experiment", None)
            if owner is not None and owner != here:
                from prefect_tune.exceptions import ConfigError

                raise ConfigError(
                    f"This {self.kind} object already searched the experiment at {owner}: a "
                    "search algorithm keeps what it learnt, so each experiment needs a new one."
                )
            self.searcher._prefect_tune_experiment = here
            self._suggested, self._told, self._finished = {}, set(), False
            if not self.storage.exists(SEARCH_FILE):
                if stored_trials:
                    raise DecisionStateMismatchError(
                        f"The experiment ran {stored_trials} trial(s) with the default search "
                        f"(it has no {SEARCH_FILE}); {self.kind} cannot take it over: restore "
                        "it without search_alg=, or start a new experiment."
                    )
                return
            raw = self.storage.read_bytes(SEARCH_FILE)
            where = self.storage.full_path(SEARCH_FILE)
            document = _parse(raw, where)
            if document["kind"] != self.kind:
                raise DecisionStateMismatchError(
                    f"The experiment was run with the search algorithm {document['kind']}, not "
                    f"{self.kind}: restore it with the one it was run with "
                    "(TuneConfig(search_alg=...), Tuner.restore(search_alg=...))."
                )
            try:
                self.searcher.from_state(document["searcher"])
            except DecisionStateMismatchError as exc:
                raise DecisionStateMismatchError(f"{where}: {exc}") from exc
            except UnsupportedSchemaVersionError as exc:
                raise UnsupportedSchemaVersionError(f"{where}: {exc}") from exc
            except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
                raise DamagedStateError(
                    f"The searcher's state in {where} is damaged: {exc!r}.", where
                ) from exc
            self._suggested = {i: (t, c) for i, t, c in document["suggested"]}
            self._told = set(document["told"])
            self._finished = document["finished"]

    # -- the searcher ------------------------------------------------------------------------

    def suggest(self, index: int, trial_id: str) -> dict[str, Any] | str | None:
        """The config of new trial ``index``: the recorded one, else the searcher's, stored
        before it is returned. None: not now (ask again when a trial ends); ``FINISHED``."""
        with self._lock:
            entry = self._suggested.get(index)
            if entry is not None:
                return json.loads(json.dumps(entry[1]))
            if self._finished:
                return FINISHED
            answer = self.searcher.suggest(trial_id)
            if answer == FINISHED:
                self._finished = True
                self._write()
                return FINISHED
            if answer is None:
                return None
            if not isinstance(answer, Mapping):
                from prefect_tune.exceptions import ConfigError

                raise ConfigError(
                    f"{self.kind}.suggest() must return a dict, None or Searcher.FINISHED, "
                    f"got {type(answer).__name__}."
                )
            config = _json_config(answer, self.kind)
            self._suggested[index] = (trial_id, config)
            self._write()  # before dispatch: a crash from here on never loses it
            return json.loads(json.dumps(config))

    def on_trial_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        with self._lock:
            if trial_id not in self._told:
                self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: Mapping[str, Any] | None, error: bool = False
    ) -> None:
        """A trial ended for good; told once, whatever the number of calls."""
        with self._lock:
            if trial_id in self._told:
                return
            self._told.add(trial_id)
            self.searcher.on_trial_complete(trial_id, result=result, error=error)
            self._dirty = True


def _json_config(config: Mapping[str, Any], kind: str) -> dict[str, Any]:
    from prefect_tune.exceptions import ConfigNotSerializableError

    try:
        copy: dict[str, Any] = json.loads(json.dumps(dict(config), allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise ConfigNotSerializableError(
            f"{kind}.suggest() returned a config that cannot be stored as JSON: {exc}."
        ) from exc
    return copy


def _parse(raw: bytes, where: str) -> dict[str, Any]:
    """The record in ``raw``, checked as untrusted input."""

    def damaged(why: str) -> DamagedStateError:
        return DamagedStateError(f"The search record {where} is damaged: {why}.", where)

    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise damaged(f"not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise damaged("not a JSON object")
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise damaged(f"no integer schema_version ({version!r})")
    if version > SEARCH_SCHEMA_VERSION:
        raise UnsupportedSchemaVersionError(
            f"{where} has schema_version {version}, newer than the {SEARCH_SCHEMA_VERSION} this "
            "prefect-tune reads; upgrade prefect-tune to restore it."
        )
    if not isinstance(document.get("kind"), str):
        raise damaged("no 'kind' naming the search algorithm")
    if not isinstance(document.get("finished"), bool):
        raise damaged("'finished' is not true or false")
    suggested = document.get("suggested")
    if not isinstance(suggested, list):
        raise damaged("'suggested' is not a list")
    seen_index: set[int] = set()
    seen_id: set[str] = set()
    for entry in suggested:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not isinstance(entry[0], int)
            or isinstance(entry[0], bool)
            or entry[0] < 0
            or not isinstance(entry[1], str)
            or not isinstance(entry[2], dict)
        ):
            raise damaged(f"a suggestion is not [index, trial id, config]: {entry!r:.80}")
        if entry[0] in seen_index or entry[1] in seen_id:
            raise damaged(f"trial {entry[1]!r} (index {entry[0]}) is suggested twice")
        seen_index.add(entry[0])
        seen_id.add(entry[1])
    if seen_index != set(range(len(suggested))):
        raise damaged("the suggestions are not numbered 0, 1, 2... as they are made")
    told = document.get("told")
    if not isinstance(told, list) or not all(isinstance(t, str) for t in told):
        raise damaged("'told' is not a list of trial ids")
    if not isinstance(document.get("searcher"), dict):
        raise damaged("'searcher' is not a state document")
    return document

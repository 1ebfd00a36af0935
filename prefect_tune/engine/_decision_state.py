"""Versioned, JSON-able state documents of searchers, schedulers and stoppers.

A decision core's state is stored with the experiment so that a restore resumes it exactly. Each
document names its kind, its ``schema_version`` and the settings it was built with; loading it
into an object whose kind or settings differ is refused by name, never silently accepted (a
restore that fell back to a different scheduler would undo stop decisions without a word).

    >>> doc = state_document("ASHAScheduler", 1, {"max_t": 9}, {"rungs": []})
    >>> state_data(doc, "ASHAScheduler", 1, {"max_t": 9})
    {'rungs': []}
"""

from __future__ import annotations

import hashlib
import json
import numbers
import random
from collections.abc import Mapping
from typing import Any

from prefect_tune.exceptions import DecisionStateMismatchError, UnsupportedSchemaVersionError

__all__ = [
    "Stateful",
    "derived_rng",
    "json_copy",
    "result_number",
    "state_data",
    "state_document",
]


def json_copy(value: Any) -> Any:
    """``value`` after a JSON round trip: tuples become lists, keys strings; NaN and inf stay."""
    return json.loads(json.dumps(value, allow_nan=True))


def state_document(
    kind: str, version: int, settings: Mapping[str, Any], data: Mapping[str, Any]
) -> dict[str, Any]:
    """The stored form of a decision core's state.

    Args:
        kind: The class that wrote it (``"ASHAScheduler"``).
        version: The version of ``data``'s layout.
        settings: The constructor arguments that shape decisions, JSON-able.
        data: The decision state itself, JSON-able.
    """
    document: dict[str, Any] = json_copy(
        {"kind": kind, "schema_version": version, "settings": dict(settings), "data": dict(data)}
    )
    return document


def state_data(
    document: Any, kind: str, version: int, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``data`` of a stored state document, once checked against the reader.

    Raises:
        DecisionStateMismatchError: The document is not a state document, was written by another
            kind of searcher, scheduler or stopper, or with other settings.
        UnsupportedSchemaVersionError: It was written by a newer version of this class.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("data"), Mapping):
        raise DecisionStateMismatchError(
            f"{kind}: the stored state is not a state document (got {type(document).__name__})."
        )
    stored_kind = document.get("kind")
    if stored_kind != kind:
        raise DecisionStateMismatchError(
            f"The experiment's stored state was written by {stored_kind}, not {kind}: restore it "
            f"with the same {_role(kind)} it was run with."
        )
    stored_version = document.get("schema_version")
    if not isinstance(stored_version, int) or isinstance(stored_version, bool):
        raise DecisionStateMismatchError(
            f"{kind}: the stored state has no integer schema_version ({stored_version!r})."
        )
    if stored_version > version:
        raise UnsupportedSchemaVersionError(
            f"{kind}: the stored state has schema_version {stored_version}, newer than the "
            f"{version} this prefect-tune reads; upgrade prefect-tune to restore it."
        )
    expected = json_copy(dict(settings))
    stored = document.get("settings")
    if stored != expected:
        changed = sorted(
            key
            for key in set(expected) | set(stored if isinstance(stored, Mapping) else {})
            if not isinstance(stored, Mapping) or stored.get(key) != expected.get(key)
        )
        raise DecisionStateMismatchError(
            f"{kind}: the stored state was written with other settings ({', '.join(changed)} "
            f"differ: stored {_pick(stored, changed)}, given {_pick(expected, changed)}); restore "
            f"with the settings the experiment was run with."
        )
    return dict(document["data"])


def derived_rng(*parts: Any) -> random.Random:
    """A generator seeded by ``parts`` alone, so a decision drawn from it replays exactly."""
    material = "/".join(repr(part) for part in parts).encode()
    return random.Random(int.from_bytes(hashlib.sha256(material).digest()[:8], "big"))


def _pick(values: Any, keys: list[str]) -> dict[str, Any]:
    return {key: values.get(key) for key in keys} if isinstance(values, Mapping) else {}


def _role(kind: str) -> str:
    if kind.endswith("Stopper"):
        return "stopper"
    if kind.endswith(("Scheduler", "Rule", "Training")):
        return "scheduler"
    return "search algorithm"


def result_number(result: Mapping[str, Any], key: str) -> float | None:
    """``result[key]`` as a float when it is a reported number (not a bool), else None."""
    value = result.get(key)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


class Stateful:
    """What a searcher, scheduler or stopper implements for its state to be stored.

    Subclasses override :meth:`settings` (what shapes decisions, compared on restore),
    :meth:`state` and :meth:`load`; :meth:`to_state` and :meth:`from_state` wrap them in a
    versioned document.
    """

    #: Version of :meth:`state`'s layout; raise it when the layout changes.
    STATE_VERSION: int = 1

    def settings(self) -> dict[str, Any]:
        """The constructor arguments that shape decisions, JSON-able; compared on restore."""
        return {}

    def state(self) -> dict[str, Any]:
        """The decision state a restore needs, JSON-able; empty when there is none."""
        return {}

    def load(self, data: Mapping[str, Any]) -> None:
        """Take back what :meth:`state` returned."""

    def to_state(self) -> dict[str, Any]:
        """The state as a versioned JSON document, to store with the experiment."""
        return state_document(
            type(self).__name__, self.STATE_VERSION, self.settings(), self.state()
        )

    def from_state(self, document: Mapping[str, Any]) -> None:
        """Resume from a document :meth:`to_state` wrote, exactly where it was.

        Raises:
            DecisionStateMismatchError: It was written by another class or other settings.
            UnsupportedSchemaVersionError: It was written by a newer prefect-tune.
        """
        self.load(state_data(document, type(self).__name__, self.STATE_VERSION, self.settings()))

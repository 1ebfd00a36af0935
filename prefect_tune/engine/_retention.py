"""Which committed checkpoints a trial keeps: ``CheckpointConfig(num_to_keep=...)``, by score."""

from __future__ import annotations

import math
from collections.abc import Sequence

from prefect_tune.config import CheckpointConfig
from prefect_tune.state import CheckpointRecord

__all__ = ["checkpoints_to_drop"]


def checkpoints_to_drop(
    records: Sequence[CheckpointRecord], config: CheckpointConfig
) -> list[CheckpointRecord]:
    """The checkpoints past ``config.num_to_keep``, oldest first; the rest are kept.

    The best ``num_to_keep`` by ``checkpoint_score_attribute`` are kept (the latest ones when
    there is no score attribute; ties go to the later checkpoint); a checkpoint whose score is
    missing, not a number or NaN ranks below every other. The latest checkpoint is always kept
    too, because a resume starts from it, so one more than ``num_to_keep`` may remain.

    Args:
        records: A trial's committed checkpoints, oldest first (the last one is the latest).
        config: The experiment's checkpoint configuration.

    Returns:
        The records to drop, in the order of ``records``.

    Examples:
        >>> from prefect_tune.state import CheckpointRecord
        >>> records = [
        ...     CheckpointRecord(index=i, dir_name=f"c{i}", training_iteration=i,
        ...                      metrics={"acc": acc})
        ...     for i, acc in enumerate([0.5, 0.9, 0.7, 0.6])
        ... ]
        >>> config = CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="acc")
        >>> [r.index for r in checkpoints_to_drop(records, config)]
        [0, 2]
    """
    if config.num_to_keep is None or len(records) <= config.num_to_keep:
        return []
    latest = records[-1]
    if config.checkpoint_score_attribute is None:
        keep = list(records[-config.num_to_keep :])
    else:
        attr = config.checkpoint_score_attribute
        sign = 1.0 if config.checkpoint_score_order == "max" else -1.0

        def score(record: CheckpointRecord) -> tuple[float, int]:
            value = record.metrics.get(attr)
            if not isinstance(value, (int, float)) or math.isnan(value):
                return (-math.inf, record.index)
            return (sign * float(value), record.index)

        keep = sorted(records, key=score, reverse=True)[: config.num_to_keep]
    kept = {c.index for c in keep} | {latest.index}
    return [c for c in records if c.index not in kept]

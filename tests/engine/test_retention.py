"""`checkpoints_to_drop`: which committed checkpoints ``CheckpointConfig(num_to_keep=...)`` keeps."""

from __future__ import annotations

import math

import pytest

from prefect_tune.config import CheckpointConfig
from prefect_tune.engine import checkpoints_to_drop
from prefect_tune.state import CheckpointRecord


def records(*scores: object) -> list[CheckpointRecord]:
    """Checkpoints 0, 1, ... reported with ``loss`` = each score (None: no loss reported)."""
    return [
        CheckpointRecord(
            index=i,
            dir_name=f"checkpoint_{i:06d}",
            training_iteration=i + 1,
            metrics={} if score is None else {"loss": score},
        )
        for i, score in enumerate(scores)
    ]


def dropped(recorded: list[CheckpointRecord], **config: object) -> list[int]:
    return [r.index for r in checkpoints_to_drop(recorded, CheckpointConfig(**config))]


def test_without_num_to_keep_every_checkpoint_is_kept():
    assert dropped(records(3, 2, 1)) == []


@pytest.mark.parametrize("count", [0, 1, 2])
def test_no_more_checkpoints_than_num_to_keep_drops_none(count):
    assert dropped(records(*range(count)), num_to_keep=2) == []


def test_without_a_score_the_latest_are_kept():
    assert dropped(records(5, 4, 3, 2, 1), num_to_keep=2) == [0, 1, 2]


@pytest.mark.parametrize(
    ("order", "expected"),
    [("min", [0, 2, 3]), ("max", [1, 2, 3])],
)
def test_the_best_by_score_are_kept_and_the_latest_too(order, expected):
    # loss: 0.9, 0.1, 0.5, 0.7, 0.8. Best by min: 0.1 (#1); by max: 0.9 (#0); #4 is the latest.
    recorded = records(0.9, 0.1, 0.5, 0.7, 0.8)
    kept_min_or_max = dropped(
        recorded, num_to_keep=1, checkpoint_score_attribute="loss", checkpoint_score_order=order
    )
    assert kept_min_or_max == expected


def test_the_latest_is_kept_even_when_it_scores_worst():
    recorded = records(0.1, 0.2, 0.9)
    kept = dropped(
        recorded, num_to_keep=2, checkpoint_score_attribute="loss", checkpoint_score_order="min"
    )
    assert kept == []  # the two best (#0, #1) and the latest (#2): one more than num_to_keep


def test_missing_non_numeric_and_nan_scores_rank_below_every_number():
    recorded = records(None, "n/a", math.nan, 0.7, 0.8, 0.9)
    kept = dropped(
        recorded, num_to_keep=2, checkpoint_score_attribute="loss", checkpoint_score_order="min"
    )
    # The best two numbers (#3, #4) and the latest (#5) stay.
    assert kept == [0, 1, 2]


def test_ties_go_to_the_later_checkpoint():
    recorded = records(0.5, 0.5, 0.5, 0.1)
    kept = dropped(
        recorded, num_to_keep=2, checkpoint_score_attribute="loss", checkpoint_score_order="max"
    )
    assert kept == [0]  # of the tied 0.5s the later two (#1, #2) stay, and #3 is the latest

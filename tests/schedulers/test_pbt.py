"""Population based training on recorded result streams: ranking, exploit, explore, resume."""

from __future__ import annotations

import random

import pytest

from prefect_tune import space
from prefect_tune.engine import Decision
from prefect_tune.exceptions import ConfigError, DecisionStateMismatchError
from prefect_tune.schedulers import PopulationBasedTraining, explore
from tests.schedulers._streams import add_all, curves, round_trip

CONTINUE, PAUSE = Decision.CONTINUE, Decision.PAUSE


class ScriptedRng(random.Random):
    """Answers ``random()`` and ``randrange()`` from scripts, to pin every branch of explore."""

    def __init__(self, randoms, indices):
        super().__init__(0)
        self._randoms, self._indices = list(randoms), list(indices)

    def random(self):
        return self._randoms.pop(0)

    def randrange(self, n):  # type: ignore[override]
        return self._indices.pop(0) % n

    def choice(self, seq):
        return seq[self.randrange(len(seq))]


def _pbt(**kwargs):
    settings = dict(
        metric="loss",
        mode="min",
        time_attr="training_iteration",
        perturbation_interval=3,
        hyperparam_mutations={"lr": space.loguniform(1e-4, 1e-1)},
        seed=14,
    )
    return PopulationBasedTraining(**{**settings, **kwargs})


def _report(pbt, trial, t, loss):
    return pbt.on_trial_result(trial, {"training_iteration": t, "loss": loss})


def _drive(pbt, rows, commit=True):
    """Feed rows; the driver commits each exploit at once, as the adapter will."""
    out = []
    for trial, result in rows:
        decision = pbt.on_trial_result(trial, result)
        exploit = pbt.pending_exploit(trial)
        out.append((trial, result["training_iteration"], decision, exploit))
        if commit and exploit is not None:
            pbt.exploit_committed(trial)
    return out


@pytest.mark.parametrize(("ranked", "size"), [(1, 0), (2, 1), (3, 1), (8, 2), (9, 3), (12, 3)])
def test_quantiles_as_ray_sizes_them(ranked, size):
    pbt = _pbt()
    for i in range(ranked):
        pbt.on_trial_add(f"t{i}", {"lr": 0.01})
        _report(pbt, f"t{i}", 3, float(i))
    lower, upper = pbt._quantiles()
    assert len(lower) == len(upper) == size
    assert set(lower) == {f"t{i}" for i in range(ranked - size, ranked)}
    assert set(upper) == {f"t{i}" for i in range(size)}  # lowest losses are the top


def test_a_bottom_trial_exploits_a_top_trial_that_has_a_checkpoint():
    pbt = _pbt(hyperparam_mutations={"lr": [0.001, 0.01, 0.1]})
    for trial in "abcd":
        pbt.on_trial_add(trial, {"lr": 0.01, "layers": 2})
    assert [
        _report(pbt, t, 3, loss) for t, loss in zip("abcd", (0.1, 0.2, 0.3, 0.9), strict=True)
    ] == [
        CONTINUE,
        CONTINUE,
        CONTINUE,
        CONTINUE,  # d: bottom, but no top trial checkpointed yet
    ]
    assert _report(pbt, "a", 4, 0.1) is CONTINUE  # within the interval: not ranked again
    assert _report(pbt, "a", 6, 0.05) is CONTINUE  # top: its checkpoint at t=6 may be cloned
    assert _report(pbt, "d", 6, 0.8) is PAUSE
    exploit = pbt.pending_exploit("d")
    assert (exploit.source_trial_id, exploit.source_time, exploit.time) == ("a", 6.0, 6.0)
    assert exploit.config["layers"] == 2 and exploit.config["lr"] in (0.001, 0.01, 0.1)
    # Until the driver commits it, every result of d gets the same answer and nothing changes.
    assert _report(pbt, "d", 7, 0.8) is PAUSE and pbt.pending_exploit("d") == exploit
    assert pbt.exploit_committed("d") == exploit
    assert pbt.lineage("d")[0]["source_trial_id"] == "a"
    assert pbt.pending_exploit("d") is None
    # d took a's clock (last ranked at 6): it is not ranked again before t=9.
    assert _report(pbt, "d", 8, 0.05) is CONTINUE


def test_explore_each_kind_of_mutation():
    config = {"opt": "adam", "lr": 0.1, "batch": 64, "net": {"width": 32}, "keep": 1}
    mutations = {
        "opt": ["sgd", "adam", "rmsprop"],
        "lr": space.uniform(0.0, 1.0),
        "batch": space.randint(16, 256),
        "net": {"width": [16, 32, 64]},
    }
    # opt: perturb (0.9 >= 0.25), shift right; lr: perturb, factor 1.2; batch: perturb, 0.8;
    # net.width: resample (0.1), index 0.
    rng = ScriptedRng([0.9, 0.9, 0.9, 0.1], [1, 0, 1, 0])
    new, operations = explore(config, mutations, 0.25, (1.2, 0.8), None, rng)
    assert new == {"opt": "rmsprop", "lr": 0.1 * 1.2, "batch": 51, "net": {"width": 16}, "keep": 1}
    assert operations == {
        "opt": "shift right",
        "lr": "* 1.2",
        "batch": "* 0.8",
        "net": {"width": "resample"},
    }
    assert config["opt"] == "adam"  # the source config is untouched
    # A value not among the list's is resampled; a shift past the end stays (noop).
    new, operations = explore(
        {"opt": "other"}, {"opt": ["a", "b"]}, 0.0, (2,), None, ScriptedRng([0.9], [1])
    )
    assert (new, operations) == ({"opt": "b"}, {"opt": "resample"})
    new, operations = explore(
        {"opt": "b"}, {"opt": ["a", "b"]}, 0.0, (2,), None, ScriptedRng([0.9], [1])
    )
    assert (new, operations) == ({"opt": "b"}, {"opt": "shift right (noop)"})
    # Domains and functions are resampled; the custom function has the last word.
    new, operations = explore(
        {"lr": 0.5, "seed": 3},
        {"lr": space.uniform(2.0, 3.0), "seed": lambda: 7},
        1.0,
        (2,),
        lambda c: {**c, "tag": "explored"},
        random.Random(0),
    )
    assert 2.0 <= new["lr"] <= 3.0 and new["seed"] == 7 and new["tag"] == "explored"
    with pytest.raises(ConfigError, match="custom_explore_fn"):
        explore({}, {}, 0.0, (2,), lambda c: None, random.Random(0))


def _stream():
    configs, rows = curves()
    return {t: {"lr": c["lr"]} for t, c in configs.items()}, rows


def test_the_same_seed_makes_the_same_exploits_whatever_else_ran():
    configs, rows = _stream()
    runs = []
    for _ in range(2):
        pbt = _pbt()
        add_all(pbt, configs)
        runs.append(_drive(pbt, rows))
    assert runs[0] == runs[1]
    exploits = [e for *_, e in runs[0] if e is not None]
    assert len(exploits) >= 5
    assert all(e.config["lr"] != configs[e.source_trial_id]["lr"] for e in exploits[:1])


@pytest.mark.parametrize("cut", [0, 37, 150, 200])
def test_resume_redoes_an_uncommitted_exploit_once_and_a_committed_one_never(cut):
    configs, rows = _stream()
    straight = _pbt()
    add_all(straight, configs)
    expected = _drive(straight, rows)
    # The driver is killed after the first exploit decided from row `cut` on, before the
    # exploit was committed to the trial's stored state.
    crash = next(i for i in range(cut, len(rows)) if expected[i][3] is not None)

    first = _pbt()
    add_all(first, configs)
    before = _drive(first, rows[:crash]) + _drive(first, rows[crash : crash + 1], commit=False)
    committed = {t: first.lineage(t) for t in configs}
    resumed = _pbt()
    resumed.from_state(round_trip(first.to_state()))
    trial, _, _, exploit = before[-1]
    assert resumed.pending_exploit(trial) == exploit
    assert {t: resumed.lineage(t) for t in configs} == committed  # committed ones: kept, once
    # The trial reports its last result again: the same exploit is redone, once.
    assert resumed.on_trial_result(trial, rows[crash][1]) is PAUSE
    assert resumed.exploit_committed(trial) == exploit
    assert resumed.pending_exploit(trial) is None
    assert before + _drive(resumed, rows[crash + 1 :]) == expected
    assert resumed.to_state() == straight.to_state()


def test_a_restore_with_other_mutations_is_refused():
    stored = _pbt().to_state()
    with pytest.raises(DecisionStateMismatchError, match="hyperparam_mutations"):
        _pbt(hyperparam_mutations={"lr": [0.1, 0.2]}).from_state(stored)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"synch": True}, "synch"),
        ({"quantile_fraction": 0.6}, "quantile_fraction"),
        ({"resample_probability": 1.5}, "resample_probability"),
        ({"perturbation_interval": 0}, "perturbation_interval"),
        ({"perturbation_factors": ()}, "perturbation_factors"),
        ({"perturbation_factors": (1.2, "x")}, "perturbation_factors"),
        ({"hyperparam_mutations": {}}, "hyperparam_mutations"),
        ({"hyperparam_mutations": {"lr": 0.1}}, "hyperparam_mutations"),
        ({"hyperparam_mutations": {"lr": []}}, "hyperparam_mutations"),
        ({"custom_explore_fn": 3}, "custom_explore_fn"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_constructor_arguments_are_checked_by_name(kwargs, field):
    with pytest.raises(ConfigError, match=rf"PopulationBasedTraining\({field}=\.\.\.\)"):
        _pbt(**kwargs)


def _pending_d():
    """A population where d has an exploit of a pending (as in the test above)."""
    pbt = _pbt(hyperparam_mutations={"lr": [0.001, 0.01, 0.1]})
    for trial in "abcd":
        pbt.on_trial_add(trial, {"lr": 0.01})
    for t, loss in zip("abcd", (0.1, 0.2, 0.3, 0.9), strict=True):
        _report(pbt, t, 3, loss)
    _report(pbt, "a", 6, 0.05)
    assert _report(pbt, "d", 6, 0.8) is PAUSE
    return pbt


def test_a_skipped_exploit_leaves_the_trial_as_it_was_and_not_ranked_again_at_once():
    pbt = _pending_d()
    exploit = pbt.exploit_skipped("d")
    assert exploit is not None and exploit.source_trial_id == "a"
    assert pbt.pending_exploit("d") is None and pbt.lineage("d") == []
    assert pbt.exploit_skipped("d") is None  # nothing pending: nothing to skip
    assert _report(pbt, "d", 7, 0.8) is CONTINUE  # ranked at 6: next at 9


def test_a_trial_that_ended_leaves_the_population_and_its_pending_exploit_goes():
    pbt = _pending_d()
    pbt.on_trial_complete("d", None)
    assert pbt.pending_exploit("d") is None
    pbt.on_trial_error("a")
    lower, upper = pbt._quantiles()
    assert "a" not in upper and "d" not in lower


def test_decision_points_are_every_result_from_the_first_ranking_on():
    pbt = _pbt(perturbation_interval=3, burn_in_period=5)
    points = pbt.decision_points("t")
    assert points.time_attr == "training_iteration"
    assert [points.crossed(t - 1, t) for t in (1, 4, 5, 6, 9)] == [False, False, True, True, True]
    assert _pbt(perturbation_interval=3).decision_points("t").every_from == 3


def test_mutations_must_name_keys_of_the_param_space():
    pbt = _pbt(hyperparam_mutations={"lr": [0.1], "opt": {"beta": [0.9]}})
    pbt.check_param_space({"lr": 0.1, "opt": {"beta": 0.5}, "other": 1})
    with pytest.raises(ConfigError, match=r"mutates 'opt\.beta'"):
        pbt.check_param_space({"lr": 0.1, "opt": {"gamma": 0.5}})
    with pytest.raises(ConfigError, match=r"mutates 'lr'.*its keys: \['x'\]"):
        pbt.check_param_space({"x": 1})

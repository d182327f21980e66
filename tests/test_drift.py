"""tests/drift.py, the grouped-vs-alone comparison: it passes a record whose rounding difference grows the way
training grows it, and fails records that are not the same run (another seed, another learning rate, a bias that
appears after the tight steps). The same checks on real runs: test_extending.py's group."""
import numpy as np
import pandas as pd
import pytest

from drift import assert_same_run, compare_runs

STEPS, K = 400, 3


def record(seed: int = 0, rate: float = 50.0) -> pd.DataFrame:
    """A learning curve 0.5 (1 - e^{-t / rate}) plus per-batch noise (sd 0.1) drawn from ``seed``."""
    t = np.arange(STEPS)
    est = 0.5 * (1 - np.exp(-t / rate)) + 0.1 * np.random.default_rng(seed).standard_normal(STEPS)
    return pd.DataFrame({"step": t, "estimate": est, "loss": -est, "joint": est + t, "marginal": t})


def drifted(want: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """The same run, its estimate off by ~1e-7 at step 0, the difference doubling every step until it is the
    error of a critic of its own: an AR(1) wander of sd 0.005 nats, on the same batches."""
    rng = np.random.default_rng(seed)
    walk = np.empty(STEPS)
    walk[0] = 0.005 * rng.standard_normal()
    for t in range(1, STEPS):
        walk[t] = 0.9 * walk[t - 1] + 0.005 * np.sqrt(1 - 0.81) * rng.standard_normal()
    d = np.minimum(1e-7 * 2.0 ** np.arange(STEPS) / 0.005, 1.0) * walk
    got = want.copy()
    got["estimate"] += d
    got["loss"] -= d
    got["joint"] += 0.3 * np.arange(STEPS) / STEPS  # a shift-invariant term wandering off: not compared
    got["marginal"] += 0.3 * np.arange(STEPS) / STEPS
    return got


def test_rounding_that_grows_passes():
    want = record()
    got = drifted(want)
    r = assert_same_run(got, want, tight_steps=K)
    assert r["first_over"] < 20 and r["window_z"] < 1.0  # not identical after the first steps: tested statistically
    with pytest.raises(AssertionError, match="at step"):  # ... and not identical all along
        assert_same_run(got, want, tight_steps=STEPS)


def test_another_seed_fails_at_step_0():
    with pytest.raises(AssertionError, match="at step 0 "):
        assert_same_run(record(seed=1), record(), tight_steps=K)


def test_another_learning_rate_fails_in_the_tight_steps_and_in_the_windows():
    slow, fast = record(rate=150.0), record()  # the same batches, a slower rise
    with pytest.raises(AssertionError, match="at step 1 "):
        assert_same_run(slow, fast, tight_steps=K)
    with pytest.raises(AssertionError, match="standard errors"):
        assert_same_run(slow, fast, tight_steps=0)


def test_a_bias_after_the_tight_steps_fails():
    want = record()
    got = want.copy()
    got.loc[200:, "estimate"] += 0.15  # 1.5 sd of one step's noise, 7.5 standard errors of a 50-step window
    with pytest.raises(AssertionError, match="estimate mean over steps 203-252"):
        assert_same_run(got, want, tight_steps=K)
    assert compare_runs(got, want, tight_steps=K)["window_z"] > 4


def test_lengths_and_columns():
    want = record()
    with pytest.raises(AssertionError, match="399 steps, 400 alone"):
        assert_same_run(want.iloc[:-1], want, tight_steps=K)
    assert assert_same_run(want.iloc[:-1], want, tight_steps=K, same_length=False)["n"] == STEPS - 1
    only = want.drop(columns="loss")  # a record without a loss column: the estimate alone
    assert assert_same_run(only, only, tight_steps=STEPS)["tight_max"] == 0.0

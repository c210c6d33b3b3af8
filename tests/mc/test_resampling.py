"""Resampling schemes are unbiased; maybe_resample keeps the evidence bookkeeping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg

WEIGHTS = np.array([0.05, 0.3, 0.02, 0.13, 0.25, 0.0, 0.15, 0.1])
NUM_REPS = 4000


@pytest.mark.parametrize("scheme", pg.mc.SCHEMES)
def test_expected_counts_equal_n_times_w(scheme):
    n = WEIGHTS.size
    log_w = jnp.log(jnp.asarray(WEIGHTS, jnp.float32))
    keys = jax.random.split(jax.random.key(0), NUM_REPS)
    idx = jax.jit(jax.vmap(lambda k: pg.mc.resample(k, log_w, scheme=scheme)))(keys)
    counts = np.asarray(jax.vmap(lambda i: jnp.bincount(i, length=n))(idx), np.float64)
    assert np.all(counts.sum(axis=1) == n)
    mean, se = counts.mean(0), counts.std(0) / np.sqrt(NUM_REPS)
    expected = n * WEIGHTS
    assert np.all(np.abs(mean - expected) <= 4 * se + 1e-9), (mean, expected, se)
    assert np.all(counts[:, WEIGHTS == 0] == 0)


@pytest.mark.parametrize("scheme", pg.mc.SCHEMES)
def test_resampling_leaves_expectation_of_a_function_unchanged(scheme):
    # E[mean f(x_resampled)] = sum_i w_i f(x_i).
    values = jnp.linspace(-2.0, 3.0, WEIGHTS.size)
    log_w = jnp.log(jnp.asarray(WEIGHTS, jnp.float32))
    keys = jax.random.split(jax.random.key(1), NUM_REPS)
    est = jax.vmap(lambda k: jnp.mean(values[pg.mc.resample(k, log_w, scheme=scheme)] ** 2))(keys)
    est = np.asarray(est, np.float64)
    truth = float(np.sum(WEIGHTS * np.asarray(values) ** 2))
    assert abs(est.mean() - truth) <= 4 * est.std() / np.sqrt(NUM_REPS) + 1e-9


def test_maybe_resample_keeps_log_mean_exp_and_skips_when_ess_high():
    x = jnp.arange(6.0)
    even = jnp.full((6,), -3.0)
    out, lw, did, anc = pg.mc.maybe_resample(jax.random.key(0), x, even, 0.5)
    assert not bool(did) and np.array_equal(out, x) and np.array_equal(anc, np.arange(6))
    skewed = jnp.array([0.0, -10.0, -10.0, -10.0, -10.0, -10.0])
    out, lw, did, _ = pg.mc.maybe_resample(jax.random.key(0), {"x": x}, skewed, 0.5)
    assert bool(did)
    assert np.allclose(lw, pg.mc.log_mean_exp(skewed))
    assert float(pg.mc.log_mean_exp(lw)) == pytest.approx(float(pg.mc.log_mean_exp(skewed)), rel=1e-6)
    # threshold 1.0 always resamples.
    _, _, did, _ = pg.mc.maybe_resample(jax.random.key(0), x, even, 1.0)
    assert bool(did)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_threshold_outside_unit_interval_is_an_error(bad):
    with pytest.raises(ValueError, match="ess_threshold must lie in"):
        pg.mc.maybe_resample(jax.random.key(0), jnp.zeros(3), jnp.zeros(3), bad)


def test_bad_scheme_and_shapes():
    with pytest.raises(ValueError, match="unknown resampling scheme"):
        pg.mc.maybe_resample(jax.random.key(0), jnp.zeros(3), jnp.zeros(3), 0.5, "bogus")
    with pytest.raises(ValueError, match="leading axis of size 3"):
        pg.mc.maybe_resample(jax.random.key(0), jnp.zeros(4), jnp.zeros(3), 0.5)

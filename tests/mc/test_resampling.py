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


@pytest.mark.parametrize("bad", [-1e-3, -0.1, 1.5])
def test_threshold_outside_unit_interval_is_an_error(bad):
    with pytest.raises(ValueError, match="ess_threshold must lie in"):
        pg.mc.maybe_resample(jax.random.key(0), jnp.zeros(3), jnp.zeros(3), bad)


def test_bad_scheme_and_shapes():
    with pytest.raises(ValueError, match="unknown resampling scheme"):
        pg.mc.maybe_resample(jax.random.key(0), jnp.zeros(3), jnp.zeros(3), 0.5, "bogus")
    with pytest.raises(ValueError, match="leading axis of size 3"):
        pg.mc.maybe_resample(jax.random.key(0), jnp.zeros(4), jnp.zeros(3), 0.5)


# --- any number of samples (residual used to clip particle indices to num_samples) ---

@pytest.mark.parametrize("num_samples", [3, 4, 8, 13])
@pytest.mark.parametrize("scheme", pg.mc.SCHEMES)
def test_expected_counts_for_fewer_equal_and_more_samples(scheme, num_samples):
    n = WEIGHTS.size
    log_w = jnp.log(jnp.asarray(WEIGHTS))
    keys = jax.random.split(jax.random.key(7), NUM_REPS)
    idx = jax.jit(jax.vmap(lambda k: pg.mc.resample(k, log_w, num_samples, scheme)))(keys)
    assert idx.shape == (NUM_REPS, num_samples)
    counts = np.asarray(jax.vmap(lambda i: jnp.bincount(i, length=n))(idx), np.float64)
    mean, se = counts.mean(0), counts.std(0) / np.sqrt(NUM_REPS)
    expected = num_samples * WEIGHTS
    # se is 0 where a count never varies (residual's deterministic part): then it must be exact.
    assert np.all(np.abs(mean - expected) <= 4 * se + 1e-6), (mean, expected, se)
    assert np.all(counts[:, WEIGHTS == 0] == 0)


@pg.gen
def conjugate():
    z = pg.sample("z", pg.Normal(0.0, 1.0))
    pg.sample("x", pg.Normal(z, 0.5))


X_OBS = 2.3
POST_MEAN, POST_VAR = X_OBS / 1.25, 0.25 / 1.25  # z | x ~ N(x / (1 + 0.25), 0.25 / 1.25)


@pytest.mark.parametrize("num_samples", [200, 2000, 5000])
@pytest.mark.parametrize("scheme", pg.mc.SCHEMES)
def test_importance_resampling_posterior_mean(scheme, num_samples):
    # Residual with 200 of 2,000 particles gave a posterior mean of -0.04 (truth 1.84).
    res = pg.mc.importance_sampling(jax.random.key(0), conjugate, {"x": X_OBS}, num_particles=2000)
    w = np.asarray(pg.mc.normalize_weights(res.log_weights), np.float64)
    z = np.asarray(res.traces["z"], np.float64)
    weighted_mean = float(np.sum(w * z))
    # The weighted particles match the closed form (self-normalized IS, se from the ESS) ...
    assert abs(weighted_mean - POST_MEAN) <= 4 * np.sqrt(POST_VAR / float(res.ess))
    # ... and resampling keeps their mean: se of a mean of num_samples draws (multinomial bound).
    weighted_var = float(np.sum(w * (z - weighted_mean) ** 2))
    draws = np.asarray(pg.mc.importance_resampling(jax.random.key(1), res, num_samples, scheme)["z"])
    assert draws.shape == (num_samples,)
    assert abs(draws.mean() - weighted_mean) <= 4 * np.sqrt(weighted_var / num_samples), draws.mean()


# --- a zero-weight particle is never drawn, even when a uniform rounds to 1.0 ---

@pytest.mark.parametrize("scheme", pg.mc.SCHEMES)
def test_uniforms_at_the_top_never_pick_a_minus_inf_particle(scheme, monkeypatch):
    # The largest float below 1 makes (i + u) / n round to exactly 1.0 (float32 and float64).
    def largest_below_one(key, shape=(), dtype=None, *args, **kwargs):
        dtype = jnp.zeros(()).dtype if dtype is None else dtype
        return jnp.full(shape, jnp.nextafter(jnp.asarray(1, dtype), jnp.asarray(0, dtype)), dtype)

    monkeypatch.setattr(jax.random, "uniform", largest_below_one)
    n = 1000
    log_w = jnp.zeros(n).at[-1].set(-jnp.inf)
    idx = np.asarray(pg.mc.resample(jax.random.key(0), log_w, scheme=scheme))
    assert not np.any(idx == n - 1)
    assert idx[-1] == n - 2  # the top of the CDF belongs to the last particle of positive weight


def test_minus_inf_last_particle_never_drawn_at_scale():
    # Before the fix, 4 of these 2,000 float32 calls drew it (stratified: 5; about 0.25%).
    n = 100_000
    log_w = jnp.zeros(n).at[-1].set(-jnp.inf)
    drew_last = jax.jit(lambda k, lw: jnp.any(pg.mc.resample(k, lw) == n - 1))
    hits = jax.lax.map(lambda k: drew_last(k, log_w), jax.random.split(jax.random.key(0), 2000))
    assert int(hits.sum()) == 0


def test_zero_weights_between_positive_ones_are_never_drawn():
    # Many exact zeros between weights: the CDF's rounding must not open a step at any of them.
    n = 4096
    rng = np.random.default_rng(3)
    log_w = np.where(rng.uniform(size=n) < 0.7, -np.inf, rng.normal(size=n) * 3.0)
    keys = jax.random.split(jax.random.key(4), 200)
    for scheme in pg.mc.SCHEMES:
        idx = np.asarray(jax.jit(jax.vmap(lambda k: pg.mc.resample(k, jnp.asarray(log_w), scheme=scheme)))(keys))
        assert np.all(np.isfinite(log_w[idx])), scheme


# --- degenerate weights and bad settings ---

@pytest.mark.parametrize("bad", [np.full(5, -np.inf), np.array([0.0, np.nan, 0.0, 0.0, 0.0]),
                                 np.array([0.0, np.inf, 0.0, 0.0, 0.0])])
@pytest.mark.parametrize("scheme", pg.mc.SCHEMES)
def test_degenerate_weights_raise_under_validate(scheme, bad):
    log_w = jnp.asarray(bad, jnp.zeros(()).dtype)
    checked = pg.validate(lambda k, lw: pg.mc.resample(k, lw, scheme=scheme))
    with pytest.raises(pg.ValidationError, match="log_weights"):
        checked(jax.random.key(0), log_w)
    # Without validation the documented fallback: every draw is particle 0.
    assert np.all(np.asarray(pg.mc.resample(jax.random.key(0), log_w, scheme=scheme)) == 0)


def test_degenerate_weights_raise_in_maybe_resample_under_validate_and_good_ones_pass():
    checked = pg.validate(lambda k, lw: pg.mc.maybe_resample(k, jnp.arange(4.0), lw, 0.5)[1])
    with pytest.raises(pg.ValidationError, match="log_weights"):
        checked(jax.random.key(0), jnp.full(4, -jnp.inf))
    out = checked(jax.random.key(0), jnp.array([0.0, -jnp.inf, -1.0, -2.0]))
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, jnp.asarray(3), "3"])
def test_num_samples_must_be_a_static_positive_int(bad):
    with pytest.raises(pg.SettingError, match="num_samples"):
        pg.mc.resample(jax.random.key(0), jnp.zeros(4), bad)


@pytest.mark.parametrize("good", [np.int64(6), np.int32(6), 6])
def test_numpy_integer_counts_are_accepted(good):
    assert pg.mc.resample(jax.random.key(0), jnp.zeros(4), good, "residual").shape == (6,)
    res = pg.mc.importance_sampling(jax.random.key(0), conjugate, {"x": X_OBS}, num_particles=np.int64(10))
    assert pg.mc.importance_resampling(jax.random.key(0), res, good)["z"].shape == (6,)


@pytest.mark.parametrize("bad", ["bogus", None, 3])
def test_unknown_scheme_is_a_setting_error(bad):
    with pytest.raises(pg.SettingError, match="unknown resampling scheme"):
        pg.mc.resample(jax.random.key(0), jnp.zeros(3), scheme=bad)
    with pytest.raises(pg.SettingError, match="unknown resampling scheme"):
        pg.mc.maybe_resample(jax.random.key(0), jnp.zeros(3), jnp.zeros(3), 0.5, bad)


@pytest.mark.parametrize("bad", [-1e-3, -0.1, 1.5, np.float32(1.5), np.float64(-1.0), jnp.asarray(2.0)])
def test_ess_threshold_out_of_range_is_a_setting_error(bad):
    with pytest.raises(pg.SettingError, match="ess_threshold must lie in"):
        pg.mc.maybe_resample(jax.random.key(0), jnp.zeros(3), jnp.zeros(3), bad)


@pytest.mark.parametrize("bad", [None, True, "0.5", jnp.ones(2)])
def test_ess_threshold_of_the_wrong_type_is_a_setting_error(bad):
    with pytest.raises(pg.SettingError, match="ess_threshold must be a float"):
        pg.mc.maybe_resample(jax.random.key(0), jnp.zeros(3), jnp.zeros(3), bad)


@pytest.mark.parametrize("good", [1, np.float32(0.5), np.float64(1.0), jnp.asarray(0.5)])
def test_ess_threshold_accepts_every_number_type_in_range(good):
    pg.mc.maybe_resample(jax.random.key(0), jnp.zeros(3), jnp.zeros(3), good)


def test_traced_ess_threshold_is_checked_under_validate_and_one_always_resamples():
    def resampled(threshold):
        return pg.mc.maybe_resample(jax.random.key(0), jnp.zeros(4), jnp.zeros(4), threshold)[2]

    # Even weights have ESS = N: only a threshold of exactly 1 resamples them, traced or not.
    assert bool(jax.jit(resampled)(1.0)) and not bool(jax.jit(resampled)(0.99))
    assert bool(resampled(1.0)) and not bool(resampled(0.99))
    with pytest.raises(pg.ValidationError, match="ess_threshold must lie in"):
        pg.validate(resampled)(1.5)


# --- the ends of [0, 1]: 0 never resamples, 1 always does ---

SKEWED = jnp.array([0.0, -10.0, -10.0, -10.0, -10.0, -10.0])  # ESS ~ 1 of 6


@pytest.mark.parametrize("zero", [0, 0.0, np.float32(0.0), jnp.asarray(0.0)])
def test_threshold_zero_never_resamples_even_degenerate_weights(zero):
    x = jnp.arange(6.0)
    out, lw, did, ancestors = pg.mc.maybe_resample(jax.random.key(0), x, SKEWED, zero)
    assert not bool(did)
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(lw, SKEWED)
    np.testing.assert_array_equal(ancestors, np.arange(6))


def test_traced_thresholds_zero_and_one_at_the_ends():
    def resampled(threshold, log_weights):
        return pg.mc.maybe_resample(jax.random.key(0), jnp.arange(6.0), log_weights, threshold)[2]

    run = jax.jit(resampled)
    # ESS ~ 1.001 of 6: above 0.1 * 6, below 0.5 * 6
    assert not bool(run(0.0, SKEWED)) and not bool(run(0.1, SKEWED)) and bool(run(0.5, SKEWED))
    assert bool(run(1.0, jnp.zeros(6))) and not bool(run(0.0, jnp.zeros(6)))
    # the same under vmap over thresholds
    flags = jax.vmap(lambda t: resampled(t, SKEWED))(jnp.array([0.0, 0.5, 1.0]))
    assert flags.tolist() == [False, True, True]


def test_check_ess_threshold_closed_interval_and_the_open_one_for_targets():
    from probgen.mc.resampling import check_ess_threshold

    check_ess_threshold(0.0, "f")
    check_ess_threshold(1.0, "f")
    with pytest.raises(pg.SettingError, match=r"f: ess_threshold must lie in \[0, 1\]"):
        check_ess_threshold(-1e-6, "f")
    with pytest.raises(pg.SettingError, match=r"g: target_ess must lie in \(0, 1\]"):
        check_ess_threshold(0.0, "g", "target_ess", allow_zero=False)
    check_ess_threshold(1.0, "g", "target_ess", allow_zero=False)


def test_bad_particles_and_log_weights_are_setting_errors_naming_the_argument():
    with pytest.raises(pg.SettingError, match="maybe_resample: every leaf of particles"):
        pg.mc.maybe_resample(jax.random.key(0), {"x": jnp.zeros(2)}, jnp.zeros(3), 0.5)
    with pytest.raises(pg.SettingError, match=r"resample: log_weights must have shape \(N,\)"):
        pg.mc.resample(jax.random.key(0), jnp.zeros((3, 2)))

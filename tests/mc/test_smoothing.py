"""Particle smoothers and missing observations on a linear-Gaussian SSM, against the exact
Kalman filter and Rauch-Tung-Striebel smoother."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg
from tests.mc.lgssm import A, Q, R, kalman, lg_step, rts, simulate

T = 30
YS = simulate(7, T)
OBSERVED = np.ones(T, bool)
OBSERVED[[3, 9, 10, 11, 12, 20, 27]] = False           # a gap of four and some single misses
MODEL = pg.scan(lg_step, length=T)
OBS = {"y": jnp.asarray(YS)}
OBS_NAN = {"y": jnp.asarray(np.where(OBSERVED, YS, np.nan))}   # missing values given as NaN
KF_MEANS, KF_VARS, KF_LOGZ = kalman(YS)
RTS_MEANS, RTS_VARS = rts(KF_MEANS, KF_VARS)
KF_MEANS_MISSING, KF_VARS_MISSING, KF_LOGZ_MISSING = kalman(YS, observed=OBSERVED)
RTS_MEANS_MISSING, RTS_VARS_MISSING = rts(KF_MEANS_MISSING, KF_VARS_MISSING)


def spread_z_scores(estimates, truth):
    """z-scores of the mean of independent runs' estimates (rows), SE from their spread."""
    estimates = np.asarray(estimates, np.float64)
    se = estimates.std(axis=0, ddof=1) / np.sqrt(estimates.shape[0])
    return (estimates.mean(axis=0) - truth) / se, se


# --- backward simulation (with missing observations and a known input x_t) vs RTS ---

@pg.gen
def driven_step(z, u):
    z = pg.sample("z", pg.Normal(A * z + u, jnp.sqrt(Q)))
    pg.sample("y", pg.Normal(z, jnp.sqrt(R)))
    return z, None


@pg.gen
def imputing_proposal(z_prev, u, obs):
    """The locally optimal proposal p(z_t | z_{t-1}, y_t); the transition where y_t is missing (NaN)."""
    seen = ~jnp.isnan(obs["y"])
    var = jnp.where(seen, 1.0 / (1.0 / Q + 1.0 / R), Q)
    mean = jnp.where(seen, var * ((A * z_prev + u) / Q + jnp.nan_to_num(obs["y"]) / R), A * z_prev + u)
    pg.sample("z", pg.Normal(mean, jnp.sqrt(var)))


# With inputs u_t, z_t - c_t (c_t = A c_{t-1} + u_t) is the undriven chain observed through
# y_t - c_t: so y = YS + c has the smoothing means c + RTS_MEANS_MISSING.
INPUTS = np.sin(np.arange(T) / 3.0).astype(np.float32)
DRIFT = np.zeros(T)
for _t in range(T):
    DRIFT[_t] = (A * DRIFT[_t - 1] if _t else 0.0) + INPUTS[_t]


@jax.jit
def backward_run(key):
    # y_13, right after the gap, is a 3.2-sigma innovation: with a bootstrap filter the weights
    # there collapse, and the smoother's O(1/N) bias at N = 256 shows at this precision.
    k_filter, k_smooth = jax.random.split(key)
    model, xs = pg.scan(driven_step), jnp.asarray(INPUTS)
    ys = {"y": jnp.asarray(np.where(OBSERVED, YS + DRIFT, np.nan), jnp.float32)}
    result = pg.mc.smc(k_filter, model, ys, 0.0, xs, num_particles=1024, obs_mask=jnp.asarray(OBSERVED),
                       proposal=imputing_proposal)
    paths = pg.mc.backward_simulation_smoother(k_smooth, model, result.states, xs, num_samples=64)
    z = paths.choices["z"]                                            # (M, T)
    return z.mean(0), z.var(0), paths.carries, z, paths.log_weights


@pytest.mark.slow
def test_backward_simulation_means_and_variances_match_rts():
    # 32 independent filter + smoother runs: their spread gives an SE that includes the
    # correlation of trajectories drawn from one filter (and the filter's own error).
    means, variances, carries, z, log_weights = jax.vmap(backward_run)(jax.random.split(jax.random.key(0), 32))
    # (Backward weights that took x_t instead of x_{t+1} score |z| ~ 11 here.)
    scores, se = spread_z_scores(means, DRIFT + RTS_MEANS_MISSING)
    assert np.max(np.abs(scores)) < 4.0, (np.max(np.abs(scores)), se)
    # The SE is meaningful: not below the i.i.d. bound sqrt(P_t / (runs * M)).
    assert np.all(se > 0.5 * np.sqrt(RTS_VARS_MISSING / (32 * 64)))
    # A smoother, not a filter: the filtering means are far from the smoothed ones.
    assert np.max(np.abs((KF_MEANS_MISSING - RTS_MEANS_MISSING) / se)) > 10
    assert abs(np.mean(np.asarray(variances, np.float64).mean(0) / RTS_VARS_MISSING) - 1) < 0.1
    # Trajectories are unweighted draws, and the carry of this model is its state z.
    np.testing.assert_array_equal(carries, z)
    np.testing.assert_allclose(pg.mc.normalize_weights(log_weights[0]), np.full(64, 1 / 64), rtol=1e-5)


# --- genealogy: exact ancestry, and the last steps against RTS ---

@functools.cache
def genealogy_runs():
    """16 independent filter runs (N = 1000) and their ancestral paths, in one jitted vmap."""

    def run(key):
        result = pg.mc.smc(key, MODEL, OBS, 0.0, num_particles=1000)
        return result, pg.mc.genealogy_smoother(result.states, result.infos)

    return jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(2), 16))


def test_genealogy_paths_follow_the_ancestors_and_end_at_the_final_particles():
    result, paths = jax.tree.map(lambda v: v[0], genealogy_runs())
    assert paths.choices["z"].shape == (1000, T) and paths.carries.shape == (1000, T)
    np.testing.assert_array_equal(paths.choices["z"][:, -1], result.final.choices["z"])
    np.testing.assert_array_equal(paths.choices["y"], np.broadcast_to(YS, (1000, T)))
    np.testing.assert_allclose(paths.log_weights, result.final.log_weights
                               - jax.nn.logsumexp(result.final.log_weights), rtol=1e-6)
    # One step back: the parent of final particle i is ancestors[T-1][i].
    parents = result.infos.ancestors[-1]
    np.testing.assert_array_equal(paths.choices["z"][:, -2], result.states.choices["z"][-2][parents])
    # Path degeneracy: far fewer distinct particles at t = 0 than at the end.
    assert len(np.unique(paths.choices["z"][:, 0])) < len(np.unique(paths.choices["z"][:, -1])) / 4


@pytest.mark.slow
def test_genealogy_last_steps_match_rts():
    last = 4
    _, paths = genealogy_runs()
    means = jax.vmap(lambda z, lw: pg.mc.normalize_weights(lw) @ z[:, -last:])(paths.choices["z"], paths.log_weights)
    scores, se = spread_z_scores(means, RTS_MEANS[-last:])
    assert np.max(np.abs(scores)) < 4.0, (scores, se)
    # The final-time marginal is the filtering distribution at T-1.
    np.testing.assert_allclose(RTS_MEANS[-1], KF_MEANS[-1])


def test_genealogy_without_resampling_is_the_filter_itself():
    result = pg.mc.smc(jax.random.key(3), MODEL, OBS, 0.0, num_particles=16, ess_threshold=0.0)
    paths = pg.mc.genealogy_smoother(result.states, result.infos)
    np.testing.assert_array_equal(paths.choices["z"], result.states.choices["z"].T)


# --- missing observations: the masked filter vs the Kalman filter that skips updates ---

@pytest.mark.slow
def test_masked_filter_evidence_is_unbiased_for_the_kalman_with_missing_steps():
    run = jax.jit(jax.vmap(lambda k: pg.mc.smc(k, MODEL, OBS_NAN, 0.0, num_particles=256, keep="last",
                                               obs_mask=jnp.asarray(OBSERVED)).log_evidence))
    log_z = np.asarray(run(jax.random.split(jax.random.key(4), 64)), np.float64)
    ratio = np.exp(log_z - KF_LOGZ_MISSING)
    assert abs(ratio.mean() - 1.0) <= 4 * ratio.std(ddof=1) / np.sqrt(ratio.size), ratio.mean()


def test_masked_filter_means_match_kalman_and_ignore_the_missing_values():
    run = jax.jit(lambda key, obs: pg.mc.smc(key, MODEL, obs, 0.0, num_particles=2000,
                                             obs_mask=jnp.asarray(OBSERVED)))
    result = run(jax.random.key(5), OBS_NAN)
    z = np.asarray(result.states.choices["z"], np.float64)
    w = np.asarray(jax.vmap(pg.mc.normalize_weights)(result.states.log_weights), np.float64)
    ess_t = 1.0 / np.sum(w**2, axis=1)
    scores = (np.sum(w * z, axis=1) - KF_MEANS_MISSING) / np.sqrt(KF_VARS_MISSING / ess_t)
    assert np.max(np.abs(scores)) < 4.5, np.max(np.abs(scores))
    # At a missing step y is drawn from the model (imputed), not the NaN given there.
    y = np.asarray(result.states.choices["y"])
    assert np.all(np.isfinite(y)) and np.all(y[OBSERVED] == YS[OBSERVED][:, None])
    # Values at missing steps are ignored: finite stand-ins give the same run.
    np.testing.assert_array_equal(run(jax.random.key(5), OBS).log_evidence, result.log_evidence)


@pg.gen
def sensor(z):
    return pg.sample("y", pg.Normal(z, jnp.sqrt(R)))


@pg.gen
def two_sensor_step(z, _):
    z = pg.sample("z", pg.Normal(A * z, jnp.sqrt(Q)))
    pg.sample("sensors", pg.repeat(sensor, 2), z)
    return z, None


def kalman_sensors(ys, observed):
    """Exact log evidence with independent sensors: one scalar update per observed sensor."""
    m, p, log_z = 0.0, 0.0, 0.0
    for y_t, seen_t in zip(np.asarray(ys, np.float64), observed):
        m, p = A * m, A * A * p + Q
        for y, seen in zip(y_t, seen_t):
            if seen:
                s = p + R
                log_z += -0.5 * (np.log(2 * np.pi * s) + (y - m) ** 2 / s)
                m, p = m + p / s * (y - m), p * R / s
    return log_z


def test_per_sensor_mask_in_a_plate_matches_kalman():
    rng = np.random.default_rng(8)
    ys = np.stack([YS, YS + rng.normal(size=T) * np.sqrt(R)], axis=1).astype(np.float32)
    observed = rng.uniform(size=(T, 2)) < 0.6          # each sensor misses about 40% of the steps
    model = pg.scan(two_sensor_step, length=T)
    run = jax.jit(jax.vmap(lambda k: pg.mc.smc(
        k, model, {("sensors", "y"): jnp.asarray(ys)}, 0.0, num_particles=256, keep="last",
        obs_mask={("sensors", "y"): jnp.asarray(observed)}).log_evidence))
    log_z = np.asarray(run(jax.random.split(jax.random.key(9), 48)), np.float64)
    ratio = np.exp(log_z - kalman_sensors(ys, observed))
    assert abs(ratio.mean() - 1.0) <= 4 * ratio.std(ddof=1) / np.sqrt(ratio.size), ratio.mean()


def test_nan_observations_the_mask_does_not_mark_missing_are_refused():
    with pytest.raises(pg.ConstraintError, match=r"smc: the observations at 'y' are NaN at step\(s\) "
                                                 r"3, 9, 10, 11, 12, \.\.\.; mark missing observations with obs_mask"):
        pg.mc.smc(jax.random.key(0), MODEL, OBS_NAN, 0.0, num_particles=8)
    partly = jnp.asarray(OBSERVED).at[9].set(True)    # says step 9 is observed; its value is NaN
    with pytest.raises(pg.ConstraintError, match=r"particle_filter: .* NaN at step\(s\) 9; "):
        pg.mc.particle_filter(MODEL, OBS_NAN, num_particles=8, obs_mask=partly)

    # Observations known only at run time (a jitted argument): pg.validate finds the NaN.
    def log_evidence(key, observations):
        pf = pg.mc.particle_filter(MODEL, observations, num_particles=8)
        return pg.run(pf, key, pf.init(0.0), 4)[0].log_evidence

    with pytest.raises(pg.ValidationError, match="particle_filter: the observation at 'y' is NaN at step 3"):
        pg.validate(log_evidence)(jax.random.key(0), OBS_NAN)
    assert not np.isfinite(float(jax.jit(log_evidence)(jax.random.key(0), OBS_NAN)))   # unchecked: meaningless


def test_masked_filter_runs_under_validate():
    checked = pg.validate(lambda k: pg.mc.smc(k, MODEL, OBS_NAN, 0.0, num_particles=8, keep="last",
                                              obs_mask=jnp.asarray(OBSERVED)).log_evidence)
    assert np.isfinite(float(checked(jax.random.key(0))))


# --- float64, settings and errors ---

def test_smoothers_keep_float64():
    with jax.enable_x64(True):
        obs = {"y": jnp.asarray(OBS_NAN["y"], jnp.float64)}
        result = pg.mc.smc(jax.random.key(0), MODEL, obs, 0.0, num_particles=32, obs_mask=jnp.asarray(OBSERVED))
        genealogy = pg.mc.genealogy_smoother(result.states, result.infos)
        backward = pg.mc.backward_simulation_smoother(jax.random.key(1), MODEL, result.states, num_samples=8)
        for paths, count in ((genealogy, 32), (backward, 8)):
            assert paths.choices["z"].dtype == jnp.float64 and paths.carries.dtype == jnp.float64
            assert paths.log_weights.dtype == jnp.float64 and paths.choices["z"].shape == (count, T)
            assert abs(float(jax.nn.logsumexp(paths.log_weights))) < 1e-12
        assert result.log_evidence.dtype == jnp.float64 and np.isfinite(float(result.log_evidence))


def test_bad_smoother_settings_raise_clear_errors():
    result = pg.mc.smc(jax.random.key(0), MODEL, OBS, 0.0, num_particles=8)
    with pytest.raises(pg.SettingError, match="backward_simulation_smoother: num_samples must be a positive int"):
        pg.mc.backward_simulation_smoother(jax.random.key(0), MODEL, result.states, num_samples=0)
    last = pg.mc.smc(jax.random.key(0), MODEL, OBS, 0.0, num_particles=8, keep="last")
    with pytest.raises(pg.ArgumentError, match="genealogy_smoother: states must be .* keep='last'"):
        pg.mc.genealogy_smoother(last.states, last.infos)
    with pytest.raises(pg.ArgumentError, match="states need a leading time axis"):
        pg.mc.backward_simulation_smoother(jax.random.key(0), MODEL, last.final, num_samples=4)
    with pytest.raises(pg.ArgumentError, match="infos must be the per-step SMCInfo"):
        pg.mc.genealogy_smoother(result.states, last.infos)
    with pytest.raises(pg.ArgumentError, match="model must be the pg.scan"):
        pg.mc.backward_simulation_smoother(jax.random.key(0), lg_step, result.states, num_samples=4)
    with pytest.raises(pg.ConstraintError, match="has 31 time steps, but states has 30"):
        pg.mc.backward_simulation_smoother(jax.random.key(0), pg.scan(lg_step, length=T + 1), result.states,
                                           num_samples=4)


def test_bad_obs_mask_raises_clear_errors():
    def build(obs_mask, observations=OBS):
        return pg.mc.particle_filter(MODEL, observations, num_particles=8, obs_mask=obs_mask)

    with pytest.raises(pg.ArgumentError, match="obs_mask at 'y' must be boolean"):
        build(jnp.ones(T))
    with pytest.raises(pg.ConstraintError, match=r"obs_mask at 'y' must have shape \(30,\)"):
        build(jnp.ones(T - 1, bool))
    with pytest.raises(pg.ConstraintError, match="obs_mask names 'x', which is not an observed address"):
        build({"x": jnp.ones(T, bool)})
    with pytest.raises(pg.ArgumentError, match="are booleans"):
        build(jnp.ones(T, bool), {"y": jnp.ones(T, bool)})


@pg.gen
def drifting(position, _):
    position = position + 1.0 + pg.sample("jitter", pg.Normal(0.0, 0.3))   # carry = previous carry + choice
    pg.sample("reading", pg.Normal(position, 1.0))
    return position, None


def test_backward_simulation_refuses_a_carry_beyond_the_choices_under_validate():
    model = pg.scan(drifting, length=10)
    readings = {"reading": jnp.arange(1.0, 11.0)}

    def smooth(key):
        result = pg.mc.smc(key, model, readings, 0.0, num_particles=16)
        return pg.mc.backward_simulation_smoother(key, model, result.states, num_samples=4).carries

    with pytest.raises(pg.ValidationError, match="depends on the\\s+previous carry beyond the step's choices"):
        pg.validate(smooth)(jax.random.key(0))
    # A model whose carry is its sampled state passes the same check.
    ok = pg.validate(lambda k: pg.mc.backward_simulation_smoother(
        k, MODEL, pg.mc.smc(k, MODEL, OBS, 0.0, num_particles=16).states, num_samples=4).carries)
    assert ok(jax.random.key(0)).shape == (4, T)

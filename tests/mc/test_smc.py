"""Particle filters on a linear-Gaussian SSM against the exact Kalman filter."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg
from tests.mc.lgssm import kalman, lg_step, make_model, optimal_proposal, simulate

T = 100
YS = simulate(0, T)
KF_MEANS, KF_VARS, KF_LOGZ = kalman(YS)
MODEL = pg.scan(lg_step, length=T)
OBS = {"y": jnp.asarray(YS)}


@functools.partial(jax.jit, static_argnames=("num_particles", "scheme", "threshold", "optimal", "rejuvenate"))
def run_pf(key, num_particles, scheme="systematic", threshold=0.5, optimal=False, rejuvenate=False):
    return pg.mc.smc(
        key, MODEL, OBS, 0.0, num_particles=num_particles, ess_threshold=threshold, scheme=scheme,
        proposal=optimal_proposal if optimal else None,
        rejuvenation=pg.mc.mh(pg.select("z"), scale=0.5) if rejuvenate else None,
    )


def batched_log_evidence(seed, reps, **kw):
    keys = jax.random.split(jax.random.key(seed), reps)
    return np.asarray(jax.vmap(lambda k: run_pf(k, **kw).log_evidence)(keys), np.float64)


@pytest.mark.parametrize("scheme,threshold", [("systematic", 0.5), ("multinomial", 1.0), ("stratified", 0.5),
                                              ("residual", 0.3)])
def test_evidence_is_unbiased_for_kalman(scheme, threshold):
    log_z = batched_log_evidence(1, 64, num_particles=1024, scheme=scheme, threshold=threshold)
    ratio = np.exp(log_z - KF_LOGZ)
    se = ratio.std(ddof=1) / np.sqrt(ratio.size)
    assert abs(ratio.mean() - 1.0) <= 4 * se, (ratio.mean(), se)
    assert np.std(log_z) < 0.8  # sanity: the ratio's standard error is meaningful


def test_optimal_proposal_evidence_unbiased_and_lower_variance():
    log_z_opt = batched_log_evidence(2, 64, num_particles=128, optimal=True)
    ratio = np.exp(log_z_opt - KF_LOGZ)
    assert abs(ratio.mean() - 1.0) <= 4 * ratio.std(ddof=1) / np.sqrt(ratio.size)
    log_z_boot = batched_log_evidence(3, 64, num_particles=128)
    assert np.var(log_z_opt) < np.var(log_z_boot)


def filtering_z_scores(result):
    z = np.asarray(result.states.choices["z"], np.float64)         # (T, N)
    w = np.asarray(jax.vmap(pg.mc.normalize_weights)(result.states.log_weights), np.float64)
    mean = np.sum(w * z, axis=1)
    ess_t = 1.0 / np.sum(w**2, axis=1)
    # Standard error of a weighted mean with posterior variance P_t and ESS_t particles.
    return (mean - KF_MEANS) / np.sqrt(KF_VARS / ess_t)


def test_filtering_means_match_kalman():
    result = run_pf(jax.random.key(4), num_particles=2000)
    scores = filtering_z_scores(result)
    assert np.max(np.abs(scores)) < 4.5, np.max(np.abs(scores))
    # Weighted variances too (loosely: within 10% of the Kalman variances on average).
    z = np.asarray(result.states.choices["z"], np.float64)
    w = np.asarray(jax.vmap(pg.mc.normalize_weights)(result.states.log_weights), np.float64)
    var = np.sum(w * (z - np.sum(w * z, 1, keepdims=True)) ** 2, axis=1)
    assert abs(np.mean(var / KF_VARS) - 1.0) < 0.05
    assert result.infos.resampled.dtype == jnp.bool_ and 0 < int(result.infos.resampled.sum()) <= T


def test_rejuvenation_keeps_filtering_correct():
    result = run_pf(jax.random.key(5), num_particles=2000, rejuvenate=True)
    assert np.max(np.abs(filtering_z_scores(result))) < 4.5
    assert 0.2 < float(result.infos.acceptance_rate.mean()) < 1.0


def test_kernel_steps_match_smc_and_vmap_over_keys():
    pf = pg.mc.particle_filter(MODEL, OBS, num_particles=64)
    state, info = jax.jit(lambda k: pg.run(pf, k, pf.init(0.0), T))(jax.random.key(6))
    direct = run_pf(jax.random.key(6), num_particles=64)
    assert int(state.step) == T
    np.testing.assert_allclose(state.log_evidence, direct.log_evidence, rtol=1e-5)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="num_particles must be a positive int"):
        pg.mc.smc(jax.random.key(0), MODEL, OBS, 0.0, num_particles=0)
    with pytest.raises(ValueError, match="ess_threshold must lie in"):
        pg.mc.smc(jax.random.key(0), MODEL, OBS, 0.0, num_particles=8, ess_threshold=-0.1)
    with pytest.raises(ValueError, match="ess_threshold must lie in"):
        pg.mc.smc(jax.random.key(0), MODEL, OBS, 0.0, num_particles=8, ess_threshold=1.2)

    @pg.gen
    def wrong_proposal(z_prev, _, obs):
        pg.sample("w", pg.Normal(z_prev, 1.0))

    with pytest.raises(ValueError, match="does not propose the latent address.*'z'"):
        pg.mc.smc(jax.random.key(0), MODEL, OBS, 0.0, num_particles=8, proposal=wrong_proposal)
    with pytest.raises(ValueError, match="leading time axis of size 100"):
        pg.mc.smc(jax.random.key(0), MODEL, {"y": jnp.zeros(7)}, 0.0, num_particles=8)
    with pytest.raises(TypeError, match="pg.scan"):
        pg.mc.smc(jax.random.key(0), lg_step, OBS, 0.0, num_particles=8)


# --- float64: every float of the filter keeps the model's dtype ---

def test_float64_particle_filter_matches_kalman_to_float64_precision():
    # With a = 0 the locally optimal proposal makes every incremental weight p(y_t) exactly,
    # so log Z_hat equals the Kalman log evidence up to rounding: ~1e-14 in float64,
    # ~1e-6 in float32 (and before the fix float64 crashed: "carry types differ").
    ys = simulate(10, 50, a=0.0)
    log_z = kalman(ys, a=0.0)[2]
    step, proposal = make_model(0.0)
    with jax.enable_x64(True):
        result = jax.jit(lambda k: pg.mc.smc(k, pg.scan(step, length=50), {"y": jnp.asarray(ys, jnp.float64)},
                                             0.0, num_particles=64, proposal=proposal, ess_threshold=1.0))(
            jax.random.key(0))
        assert result.log_evidence.dtype == jnp.float64
        assert result.final.log_weights.dtype == jnp.float64 and result.final.carry.dtype == jnp.float64
        assert result.states.choices["z"].dtype == jnp.float64 and bool(result.infos.resampled.all())
        np.testing.assert_allclose(float(result.log_evidence), log_z, rtol=1e-11)
        # The bootstrap filter on the a = 0.9 model runs in float64 too, near the Kalman value.
        boot = pg.mc.smc(jax.random.key(1), MODEL, {"y": jnp.asarray(YS, jnp.float64)}, 0.0, num_particles=2000,
                         rejuvenation=pg.mc.mh(pg.select("z"), scale=0.5), keep="last")
        assert boot.log_evidence.dtype == jnp.float64 and boot.infos.acceptance_rate.dtype == jnp.float64
        assert abs(float(boot.log_evidence) - KF_LOGZ) < 1.0


# --- keep="last": same estimate, no per-step arrays ---

def test_keep_last_gives_the_same_evidence_without_a_time_axis():
    full = run_pf(jax.random.key(8), num_particles=256)
    last = jax.jit(lambda k: pg.mc.smc(k, MODEL, OBS, 0.0, num_particles=256, keep="last"))(jax.random.key(8))
    np.testing.assert_allclose(last.log_evidence, full.log_evidence, rtol=1e-6)
    np.testing.assert_array_equal(last.final.log_weights, full.final.log_weights)
    assert last.states is None
    assert last.infos.ess.shape == () and last.infos.ancestors.shape == (256,)
    np.testing.assert_array_equal(last.infos.ancestors, full.infos.ancestors[-1])
    with pytest.raises(pg.SettingError, match="keep must be"):
        pg.mc.smc(jax.random.key(0), MODEL, OBS, 0.0, num_particles=8, keep="some")


# --- past the horizon: refused, never re-weighted on the last observation ---

def test_stepping_a_known_state_past_the_horizon_is_refused():
    pf = pg.mc.particle_filter(MODEL, OBS, num_particles=8)
    past = pf.init(0.0)._replace(step=jnp.asarray(T, jnp.int32))
    with pytest.raises(pg.SettingError, match="step index 100 is past the horizon.*100 time steps"):
        pf.step(jax.random.key(0), past)


def test_running_past_the_horizon_is_refused_at_trace_time_and_under_validate():
    pf = pg.mc.particle_filter(MODEL, OBS, num_particles=8)
    # pg.run knows the filter's horizon (T) statically: more steps are refused before tracing.
    with pytest.raises(pg.SettingError, match="num_steps=103 exceeds the kernel's horizon of 100"):
        pg.run(pf, jax.random.key(0), pf.init(0.0), T + 3)

    def run_on(k):  # a second run from the end state: only run time can tell
        end, _ = pg.run(pf, k, pf.init(0.0), T)
        return pg.run(pf, k, end, 3)[0].log_evidence

    assert np.isfinite(float(pg.validate(lambda k: pg.run(pf, k, pf.init(0.0), T)[0].log_evidence)(jax.random.key(0))))
    with pytest.raises(pg.ValidationError, match="step index 100 is past the horizon"):
        pg.validate(run_on)(jax.random.key(0))
    # Unchecked, the extra steps poison the estimate instead of reusing y_{T-1} (was finite).
    assert np.isnan(float(jax.jit(run_on)(jax.random.key(0))))


# --- ess_threshold = 0: sequential importance sampling, still unbiased ---

def test_threshold_zero_never_resamples_and_the_evidence_stays_unbiased():
    ys = simulate(20, 5)
    log_z_exact = kalman(ys)[2]
    model, obs = pg.scan(lg_step, length=5), {"y": jnp.asarray(ys)}

    def run(key):
        result = pg.mc.smc(key, model, obs, 0.0, num_particles=256, ess_threshold=0.0)
        return result.log_evidence, result.infos.resampled, result.infos.ancestors

    log_z, resampled, ancestors = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(21), 64))
    assert not bool(resampled.any())
    np.testing.assert_array_equal(ancestors, np.broadcast_to(np.arange(256), ancestors.shape))
    ratio = np.exp(np.asarray(log_z, np.float64) - log_z_exact)
    assert abs(ratio.mean() - 1.0) <= 4 * ratio.std(ddof=1) / np.sqrt(ratio.size), ratio.mean()


def test_particle_filter_init_starts_every_particle_from_the_carry_and_checks_it():
    pf = pg.mc.particle_filter(MODEL, OBS, num_particles=8)
    state = pf.init(2.0)
    np.testing.assert_array_equal(state.carry, np.full(8, 2.0))
    assert int(state.step) == 0 and float(state.log_evidence) == 0.0

    @pg.gen
    def drops_the_pair(carry, _):
        z = pg.sample("z", pg.Normal(carry[0] + carry[1], 1.0))
        pg.sample("y", pg.Normal(z, 0.5))
        return z, None

    mismatched = pg.mc.particle_filter(pg.scan(drops_the_pair, length=T), OBS, num_particles=8)
    with pytest.raises(pg.ArgumentError, match="particle_filter: the kernel of .* returns a carry of structure"):
        mismatched.init((0.0, 0.0))
    with pytest.raises(pg.ArgumentError, match="particle_filter: proposal must be a generative function"):
        pg.mc.particle_filter(MODEL, OBS, num_particles=8, proposal=lambda *a: None)

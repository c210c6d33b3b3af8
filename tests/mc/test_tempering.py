"""Tempered SMC against closed forms: Gaussian targets, a HalfCauchy scale (quadrature), a
state-space model inside ``pg.scan`` (Kalman / RTS), and the plain log-density entry."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest
import scipy.integrate as integrate
import scipy.stats as st

import probgen as pg
from tests.mc.lgssm import kalman, lg_step, rts, simulate

SIGMA = 0.5
X = np.array([1.0, -0.5, 2.0], np.float32)
LOG_Z = float(st.norm(0.0, np.sqrt(1.0 + SIGMA**2)).logpdf(X).sum())
POST_MEAN = X / (1.0 + SIGMA**2)


@pg.gen
def model():
    z = pg.sample("z", pg.Normal(jnp.zeros(3), 1.0))
    pg.sample("x", pg.Normal(z, SIGMA))


GAUSSIAN = pg.mc.TemperingTarget(  # the model's prior and likelihood as plain log densities
    log_prior=lambda z: jnp.sum(jax.scipy.stats.norm.logpdf(z)),
    log_likelihood=lambda z: jnp.sum(jax.scipy.stats.norm.logpdf(X, z, SIGMA)),
)


def test_tempered_smc_evidence_and_posterior_by_model_and_by_log_densities():
    def both(key):
        k_init, k_run = jax.random.split(key)
        z = jax.random.normal(k_init, (500, 3))
        settings = dict(num_particles=500, move="hmc", step_size=0.2, num_leapfrog_steps=5, num_mcmc_steps=2)
        by_model = pg.mc.tempered_smc(k_run, model, {"x": X}, particles={"z": z}, **settings)
        by_density = pg.mc.tempered_smc(k_run, GAUSSIAN, particles=z, **settings)
        return by_model, by_density

    res, plain = jax.jit(jax.vmap(both))(jax.random.split(jax.random.key(0), 8))
    assert np.all(np.asarray(res.final.beta) == 1.0) and np.all(np.asarray(res.num_steps) > 1)
    log_z = np.asarray(res.log_evidence, np.float64)
    se = log_z.std(ddof=1) / np.sqrt(log_z.size)
    assert abs(log_z.mean() - LOG_Z) <= 4 * se + 0.02, (log_z.mean(), LOG_Z, se)
    mean = np.asarray(res.final.latents["z"]).mean(axis=(0, 1))
    assert np.all(np.abs(mean - POST_MEAN) < 4 * np.sqrt(0.2 / (8 * 500)) + 0.03)
    # The same particles, keys and density through the plain entry: the same run up to rounding.
    np.testing.assert_allclose(plain.log_evidence, res.log_evidence, atol=1e-3)
    np.testing.assert_allclose(plain.final.position, res.final.latents["z"], atol=1e-3)
    assert plain.final.latents is None


def test_bad_settings_are_setting_errors_naming_the_argument():
    with pytest.raises(pg.SettingError, match="target_ess must lie in"):
        pg.mc.tempered_smc(jax.random.key(0), model, {"x": X}, num_particles=10, target_ess=0.0)
    with pytest.raises(pg.SettingError, match="unknown move"):
        pg.mc.tempered_smc(jax.random.key(0), model, {"x": X}, num_particles=10, move="gibbs")
    for name, bad in [("num_mcmc_steps", -1), ("num_leapfrog_steps", 0), ("max_steps", 2.0)]:
        with pytest.raises(pg.SettingError, match=name):
            pg.mc.tempered_smc(jax.random.key(0), model, {"x": X}, num_particles=10, **{name: bad})


def test_float64_tempered_smc_keeps_the_dtype_and_compiles_once():
    # Before the fix: "while_loop body function carry input and carry output must have equal types".
    traced = []

    @pg.gen
    def counted(scale):
        traced.append(1)  # runs only while JAX traces the model
        z = pg.sample("z", pg.Normal(jnp.zeros(3), scale))
        pg.sample("x", pg.Normal(z, SIGMA))

    settings = dict(num_particles=200, move="hmc", step_size=0.2, num_leapfrog_steps=5, num_mcmc_steps=2)
    with jax.enable_x64(True):
        res = pg.mc.tempered_smc(jax.random.key(1), counted, {"x": jnp.asarray(X, jnp.float64)}, 1.0, **settings)
        assert res.log_evidence.dtype == jnp.float64 and res.betas.dtype == jnp.float64
        assert res.final.latents["z"].dtype == jnp.float64 and float(res.final.beta) == 1.0
        assert res.final.step_size.dtype == jnp.float64 and res.final.inverse_mass_matrix.dtype == jnp.float64
        # One run: its log Z error is a few tenths at most for this 3-d Gaussian (see the test above).
        assert abs(float(res.log_evidence) - LOG_Z) < 0.5
        # The driver compiled itself: new observations, arguments and key reuse the program.
        count = len(traced)
        again = pg.mc.tempered_smc(jax.random.key(2), counted, {"x": jnp.zeros(3)}, 2.0, **settings)
        assert len(traced) == count > 0
        exact = st.norm(0.0, np.sqrt(4.0 + SIGMA**2)).logpdf(np.zeros(3)).sum()
        assert abs(float(again.log_evidence) - exact) < 0.5


@pg.gen
def point(mean):
    z = pg.sample("z", pg.Normal(mean, 1.0))
    pg.sample("x", pg.Normal(z, SIGMA))


def test_latents_inside_a_vmap_plate_match_the_closed_form():
    # The likelihood comes from GenerativeFunction.project, which reads per-site scores inside
    # combinators (the former replay interceptor refused latents inside vmap/scan).
    plate = pg.vmap(point)
    run = jax.jit(jax.vmap(lambda k: pg.mc.tempered_smc(k, plate, {"x": X}, jnp.zeros(3), num_particles=500,
                                                           move="hmc", step_size=0.2, num_leapfrog_steps=5,
                                                           num_mcmc_steps=2)))
    res = run(jax.random.split(jax.random.key(2), 8))
    log_z = np.asarray(res.log_evidence, np.float64)
    se = log_z.std(ddof=1) / np.sqrt(log_z.size)
    assert abs(log_z.mean() - LOG_Z) <= 4 * se + 0.02, (log_z.mean(), LOG_Z, se)
    mean = np.asarray(res.final.latents["z"]).mean(axis=(0, 1))
    assert np.all(np.abs(mean - POST_MEAN) < 4 * np.sqrt(0.2 / (8 * 500)) + 0.03)


def test_init_takes_prior_particles_and_refuses_missing_or_misshapen_ones():
    kernel = pg.mc.tempered_smc_kernel(model, {"x": X}, num_particles=4)
    prior = jax.vmap(model.simulate)(jax.random.split(jax.random.key(0), 4))
    state = kernel.init(prior.choices)  # the simulated "x" is ignored
    assert state.latents.addresses() == [("z",)] and float(state.beta) == 0.0
    expected = st.norm(np.asarray(prior["z"]), SIGMA).logpdf(X).sum(axis=1)
    np.testing.assert_allclose(state.log_likelihood, expected, rtol=1e-5)
    with pytest.raises(pg.MissingChoiceError, match="tempered_smc.init: particles lack the latent address"):
        kernel.init({"x": prior["x"]})
    with pytest.raises(pg.ConstraintError, match=r"need shape \(4, 3\)"):
        kernel.init({"z": jnp.zeros(3)})


# --- unconstrained coordinates, latents inside pg.scan, plain log densities (issue 15) ---

YS_SCALE = np.array([0.8, -1.9, 0.4, 2.6, -0.7], np.float32)


@pg.gen
def scale_model():
    sigma = pg.sample("sigma", nd.HalfCauchy(1.0))
    pg.sample("ys", pg.Normal(0.0, sigma * jnp.ones(YS_SCALE.shape[0])))


def _scale_quadrature():
    """Evidence and posterior mean of sigma by quadrature: HalfCauchy(1) prior, N(0, sigma) data."""
    def joint(sigma):
        return st.halfcauchy.pdf(sigma) * np.prod(st.norm.pdf(YS_SCALE.astype(np.float64), 0.0, sigma))

    evidence = integrate.quad(joint, 0.0, np.inf)[0]
    mean = integrate.quad(lambda s: s * joint(s), 0.0, np.inf)[0] / evidence
    return np.log(evidence), mean


@pytest.mark.slow
def test_a_halfcauchy_scale_moves_in_unconstrained_space_and_matches_quadrature():
    num_seeds, num_particles = 8, 400
    run = jax.jit(jax.vmap(lambda k: pg.mc.tempered_smc(k, scale_model, {"ys": YS_SCALE},
                                                           num_particles=num_particles)))
    res = run(jax.random.split(jax.random.key(3), num_seeds))
    sigma = np.asarray(res.final.latents["sigma"], np.float64)
    assert np.all(sigma > 0.0) and np.all(np.asarray(res.final.beta) == 1.0)
    # The moves ran on log(sigma): the state holds both coordinates.
    np.testing.assert_allclose(np.exp(np.asarray(res.final.position["sigma"], np.float64)), sigma, rtol=1e-5)
    assert np.all(np.asarray(res.acceptance_rates)[:, 0] > 0.2)
    log_z_exact, mean_exact = _scale_quadrature()
    means = sigma.mean(axis=1)
    se = means.std(ddof=1) / np.sqrt(num_seeds)
    assert abs(means.mean() - mean_exact) <= 4 * se + 0.01, (means.mean(), mean_exact, se)
    log_z = np.asarray(res.log_evidence, np.float64)
    se_z = log_z.std(ddof=1) / np.sqrt(num_seeds)
    assert abs(log_z.mean() - log_z_exact) <= 4 * se_z + 0.02, (log_z.mean(), log_z_exact, se_z)


@pytest.mark.slow
def test_state_space_latents_inside_scan_match_kalman_and_rts():
    num_steps, num_seeds, num_particles = 8, 8, 400
    ys = simulate(4, num_steps)
    ssm = pg.scan(lg_step, length=num_steps)
    run = jax.jit(jax.vmap(lambda k: pg.mc.tempered_smc(k, ssm, {"y": ys}, 0.0, None, num_particles=num_particles)))
    res = run(jax.random.split(jax.random.key(5), num_seeds))
    means, variances, log_z_exact = kalman(ys)
    smoothed_means, smoothed_vars = rts(means, variances)
    log_z = np.asarray(res.log_evidence, np.float64)
    se = log_z.std(ddof=1) / np.sqrt(num_seeds)
    assert abs(log_z.mean() - log_z_exact) <= 4 * se + 0.03, (log_z.mean(), log_z_exact, se)
    paths = np.asarray(res.final.latents["z"], np.float64)          # (seeds, particles, time)
    assert paths.shape == (num_seeds, num_particles, num_steps)
    seed_means = paths.mean(axis=1)
    se_paths = seed_means.std(axis=0, ddof=1) / np.sqrt(num_seeds)
    assert np.all(np.abs(seed_means.mean(axis=0) - smoothed_means) <= 4 * se_paths + 0.02)
    np.testing.assert_allclose(paths.var(axis=1).mean(axis=0), smoothed_vars, rtol=0.25)


def test_plain_target_errors_name_the_argument():
    target = pg.mc.TemperingTarget(lambda z: -0.5 * jnp.sum(z**2), lambda z: -jnp.sum(z**2))
    z = jnp.zeros((8, 2))
    with pytest.raises(pg.ArgumentError, match="tempered_smc: a TemperingTarget needs particles"):
        pg.mc.tempered_smc(jax.random.key(0), target, num_particles=8)
    with pytest.raises(pg.ArgumentError, match="observations and model arguments go with a model"):
        pg.mc.tempered_smc(jax.random.key(0), target, {"x": X}, num_particles=8, particles=z)
    with pytest.raises(pg.ArgumentError, match="target.log_likelihood must be a function"):
        pg.mc.tempered_smc_kernel(pg.mc.TemperingTarget(target.log_prior, 1.0), num_particles=8)
    with pytest.raises(pg.ArgumentError, match="target.log_prior must return a scalar"):
        pg.mc.tempered_smc_kernel(pg.mc.TemperingTarget(lambda z: z, target.log_likelihood),
                                  num_particles=8).init(z)
    with pytest.raises(pg.ConstraintError, match="leading axis of size num_particles=8"):
        pg.mc.tempered_smc_kernel(target, num_particles=8).init(jnp.zeros((4, 2)))
    with pytest.raises(pg.ArgumentError, match="model must be a generative function .* or a pg.mc.TemperingTarget"):
        pg.mc.tempered_smc_kernel(lambda z: z, num_particles=8)
    for name, bad in [("target_acceptance_rate", 1.5), ("adapt", "yes"), ("step_size", -0.1)]:
        with pytest.raises(pg.SettingError, match=name):
            pg.mc.tempered_smc_kernel(target, num_particles=8, **{name: bad})

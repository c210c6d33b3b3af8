"""Adaptive moves of tempered SMC (mass matrix from the particle cloud, step size from the
acceptance rate) against closed forms: an anisotropic Gaussian and Neal's funnel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st

import probgen as pg

# Long statistical runs: the float32 pass runs them; the float64 pass (`-m "not slow"`) checks dtypes elsewhere.
pytestmark = pytest.mark.slow

# -- an anisotropic Gaussian: prior scales from 0.01 to 100 --------------------------------------

DIM = 8
SCALES = np.logspace(-2.0, 2.0, DIM).astype(np.float32)
NOISE = SCALES / 2.0
Y = (SCALES * np.linspace(-1.0, 1.0, DIM)).astype(np.float32)
POST_VAR = 1.0 / (1.0 / SCALES.astype(np.float64) ** 2 + 1.0 / NOISE.astype(np.float64) ** 2)
POST_MEAN = POST_VAR * Y / NOISE.astype(np.float64) ** 2
LOG_Z = float(st.norm(0.0, np.sqrt(SCALES.astype(np.float64) ** 2 + NOISE.astype(np.float64) ** 2)).logpdf(Y).sum())

ANISOTROPIC = pg.mc.TemperingTarget(
    log_prior=lambda z: jnp.sum(jax.scipy.stats.norm.logpdf(z, 0.0, SCALES)),
    log_likelihood=lambda z: jnp.sum(jax.scipy.stats.norm.logpdf(Y, z, NOISE)),
)


def _anisotropic_runs(move, adapt, num_seeds, num_particles):
    def one(key):
        k_init, k_run = jax.random.split(key)
        particles = SCALES * jax.random.normal(k_init, (num_particles, DIM))
        return pg.mc.tempered_smc(k_run, ANISOTROPIC, num_particles=num_particles, particles=particles,
                                  move=move, adapt=adapt)

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(11), num_seeds))


@pytest.mark.parametrize("move", ["hmc", "mala", "rwmh"])
def test_adaptive_moves_recover_an_anisotropic_gaussian(move):
    # Scales over four decades: one step size and a unit mass cannot fit them all; the
    # cloud's variance whitens them, and the step size finds its acceptance target.
    num_seeds, num_particles = 4, 300
    res = _anisotropic_runs(move, True, num_seeds, num_particles)
    z = np.asarray(res.final.position, np.float64)                  # (seeds, particles, DIM)
    seed_means = z.mean(axis=1)
    # Standard errors for an effective sample size of N / 4 per run (resampled, moved particles).
    ess = num_particles / 4
    se = np.sqrt(POST_VAR / (num_seeds * ess))
    assert np.all(np.abs(seed_means.mean(axis=0) - POST_MEAN) <= 4 * se), (seed_means.mean(0) - POST_MEAN) / se
    var_se = np.sqrt(2.0 / ess) / np.sqrt(num_seeds)       # relative s.e. of a variance estimate
    np.testing.assert_allclose(z.var(axis=1).mean(axis=0) / POST_VAR, 1.0, atol=4 * var_se)
    log_z = np.asarray(res.log_evidence, np.float64)
    assert abs(log_z.mean() - LOG_Z) <= 4 * log_z.std(ddof=1) / np.sqrt(num_seeds) + 0.05, (log_z, LOG_Z)
    # The last stage's mass matrix is the posterior cloud's variance; the step size steered
    # the acceptance to its target.
    last = np.asarray(res.num_steps) - 1
    np.testing.assert_allclose(np.asarray(res.final.inverse_mass_matrix) / POST_VAR, 1.0, atol=0.5)
    rates = np.asarray(res.acceptance_rates)[np.arange(num_seeds), last]
    target = pg.mc.tempering.TARGET_ACCEPTANCE_RATES[move]
    assert np.all(np.abs(rates - target) < 0.3), rates
    assert np.all(np.isnan(np.asarray(res.step_sizes)[np.arange(num_seeds), last + 1]))


def test_fixed_moves_accept_nothing_on_the_anisotropic_gaussian():
    # A 0.1 step with unit mass overshoots the 0.005-wide coordinates on every trajectory.
    res = _anisotropic_runs("hmc", False, 1, 100)
    steps = int(res.num_steps[0])
    assert np.all(np.asarray(res.acceptance_rates)[0, :steps] < 0.05)
    np.testing.assert_allclose(np.asarray(res.step_sizes)[0, :steps], 0.1, rtol=1e-6)
    np.testing.assert_array_equal(res.final.inverse_mass_matrix, np.ones((1, DIM)))


# -- Neal's funnel ----------------------------------------------------------------------------------
#
# v ~ N(0, 3^2), x_i | v ~ N(0, exp(v / 2)^2), i = 1..9: the target is known only as a density,
# so it is posed as a tempered factor over a broad Gaussian reference N(0, 3^2 I) that the
# particles start from exactly: log_prior = log N(z; 0, 9 I), log_likelihood = log funnel(z) -
# log_prior(z). The funnel is normalized, so log Z = 0, and std(v) = 3, mean(v) = 0.

FUNNEL_DIM, FUNNEL_PARTICLES, FUNNEL_SEEDS = 10, 500, 4


def _log_reference(z):
    return jnp.sum(jax.scipy.stats.norm.logpdf(z, 0.0, 3.0))


def _log_funnel(z):
    v, x = z[0], z[1:]
    return jax.scipy.stats.norm.logpdf(v, 0.0, 3.0) + jnp.sum(jax.scipy.stats.norm.logpdf(x, 0.0, jnp.exp(v / 2)))


FUNNEL = pg.mc.TemperingTarget(_log_reference, lambda z: _log_funnel(z) - _log_reference(z))


@pytest.fixture(scope="module")
def funnel_runs():
    def one(key, adapt):
        k_init, k_run = jax.random.split(key)
        particles = 3.0 * jax.random.normal(k_init, (FUNNEL_PARTICLES, FUNNEL_DIM))
        res = pg.mc.tempered_smc(k_run, FUNNEL, num_particles=FUNNEL_PARTICLES, particles=particles, adapt=adapt)
        return res.final.position[:, 0]

    keys = jax.random.split(jax.random.key(12), FUNNEL_SEEDS)
    both = jax.jit(lambda ks: (jax.vmap(lambda k: one(k, True))(ks), jax.vmap(lambda k: one(k, False))(ks)))
    v_adapt, v_fixed = both(keys)
    return {"adapt": np.asarray(v_adapt, np.float64), "fixed": np.asarray(v_fixed, np.float64)}


def test_fixed_moves_miss_the_funnel_s_neck(funnel_runs):
    v = funnel_runs["fixed"]
    assert v.std(axis=1).mean() < 0.9 * 3.0, v.std(axis=1)   # the neck (v << 0) is not filled


@pytest.mark.xfail(strict=True, reason=(
    "one diagonal mass and one step size cannot serve the funnel's neck and mouth at once: the cloud's "
    "variance of x is the mouth's, so moves into the neck are rejected; with these seeds std(v) is "
    "1.3-1.6 and mean(v) 0.8-2.1 (fixed moves: std(v) 1.9-2.6, mean(v) -0.7-0.8)"))
def test_adaptive_moves_recover_the_funnel(funnel_runs):
    v = funnel_runs["adapt"]
    assert abs(v.std(axis=1).mean() - 3.0) < 0.3 and abs(v.mean()) < 0.1

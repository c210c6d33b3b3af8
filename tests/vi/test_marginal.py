"""pg.vi.marginal / sir: unbiased density and reciprocal-density estimates on exact examples."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

import probgen as pg

NUM = 20000


@pg.gen
def joint(mu):
    z = pg.sample("z", pg.Normal(mu, 1.0))
    return pg.sample("x", pg.Normal(z, 1.0))


@pg.gen
def reverse(kept, mu):
    # deliberately not the exact posterior N((x + mu)/2, 1/sqrt 2)
    pg.sample("z", pg.Normal(kept["x"] / 2 + 0.3, 0.9))


def _within(samples, target):
    samples = np.asarray(samples)
    se = samples.std() / np.sqrt(samples.size)
    assert abs(samples.mean() - target) < 4 * se, (samples.mean(), target, se)


@pytest.mark.parametrize("num_particles", [1, 3])
def test_marginal_density_is_unbiased(num_particles):
    q = pg.vi.marginal(joint, keep="x", proposal=reverse, num_particles=num_particles)
    x, mu = 0.8, 0.2

    def estimate(key):
        trace, log_w = q.generate(key, {"x": x}, mu)
        return jnp.exp(log_w), trace.score

    w, score = jax.jit(jax.vmap(estimate))(jax.random.split(jax.random.key(0), NUM))
    np.testing.assert_allclose(np.asarray(w), np.exp(np.asarray(score)), rtol=1e-5)
    _within(w, float(norm.pdf(x, mu, jnp.sqrt(2.0))))


@pytest.mark.parametrize("num_particles", [1, 3])
def test_marginal_reciprocal_is_unbiased(num_particles):
    q = pg.vi.marginal(joint, keep="x", proposal=reverse, num_particles=num_particles)
    mu = 0.2

    def ratio(key):
        trace = q.simulate(key, mu)
        return norm.pdf(trace["x"], mu, jnp.sqrt(2.0)) / jnp.exp(trace.score)

    _within(jax.jit(jax.vmap(ratio))(jax.random.split(jax.random.key(1), NUM)), 1.0)


def test_marginal_needs_a_key_for_assess():
    q = pg.vi.marginal(joint, keep="x", proposal=reverse)
    with pytest.raises(pg.vi.EstimatorError, match="generate"):
        q.assess({"x": 0.0}, 0.0)


# sir: z in {0, 1, 2}, exact SIR density computable by enumeration
PROPOSAL_PROBS = jnp.array([0.5, 0.3, 0.2])
TARGET_WEIGHTS = jnp.array([1.0, 3.0, 0.5])


@pg.gen
def target():
    z = pg.sample("z", pg.Categorical(probs=jnp.array([1 / 3, 1 / 3, 1 / 3])))
    pg.sample("x", pg.Normal(jnp.log(TARGET_WEIGHTS)[z], 1.0))


@pg.gen
def proposal():
    pg.sample("z", pg.Categorical(probs=PROPOSAL_PROBS))


def _sir_density(num_particles, observation):
    log_target = np.log(1 / 3) + np.asarray(norm.logpdf(observation, jnp.log(TARGET_WEIGHTS), 1.0))
    w = np.exp(log_target) / np.asarray(PROPOSAL_PROBS)
    density = np.zeros(3)
    for combo in itertools.product(range(3), repeat=num_particles):
        prob = np.prod([PROPOSAL_PROBS[c] for c in combo])
        weights = np.array([w[c] for c in combo])
        for k, c in enumerate(combo):
            density[c] += prob * weights[k] / weights.sum()
    return density


@pytest.mark.parametrize("num_particles", [2, 3])
def test_sir_estimates(num_particles):
    observation = 0.4
    sir = pg.vi.sir(target, proposal, num_particles)
    obs = pg.ChoiceMap({"x": observation})
    exact = _sir_density(num_particles, observation)

    def simulate(key):
        trace = sir.simulate(key, obs, (), ())
        z = trace["z"]
        return z, jnp.asarray(exact)[z] / jnp.exp(trace.score)

    z, ratio = jax.jit(jax.vmap(simulate))(jax.random.split(jax.random.key(2), NUM))
    _within(ratio, 1.0)  # E[q_SIR(z) / q̂(z)] = 1
    counts = np.bincount(np.asarray(z), minlength=3) / NUM
    assert np.all(np.abs(counts - exact) <= 4 * np.sqrt(exact * (1 - exact) / NUM)), (counts, exact)

    for value in range(3):
        def density(key):
            return jnp.exp(sir.generate(key, {"z": value}, obs, (), ())[1])

        _within(jax.jit(jax.vmap(density))(jax.random.split(jax.random.key(3 + value), NUM)), exact[value])

"""Importance sampling against a conjugate normal model (closed-form evidence and posterior)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st

import probgen as pg

X = 1.3
LOG_Z = st.norm(0.0, np.sqrt(2.0)).logpdf(X)  # z ~ N(0,1), x ~ N(z,1)


@pg.gen
def model():
    z = pg.sample("z", pg.Normal(0.0, 1.0))
    pg.sample("x", pg.Normal(z, 1.0))


@pg.gen
def posterior(mean, sd):
    pg.sample("z", pg.Normal(mean, sd))


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_prior_is_evidence_and_posterior_mean():
    res = jax.jit(lambda k: pg.mc.importance_sampling(k, model, {"x": X}, num_particles=20000))(jax.random.key(0))
    ratio = np.exp(np.asarray(res.log_weights, np.float64) - LOG_Z)
    assert abs(ratio.mean() - 1.0) <= 4 * ratio.std() / np.sqrt(ratio.size)
    draws = pg.mc.importance_resampling(jax.random.key(1), res, 5000)
    assert abs(float(draws["z"].mean()) - X / 2) < 4 * np.sqrt(0.5 / 5000) + 0.02


def test_exact_proposal_gives_constant_weights_equal_to_log_evidence():
    res = pg.mc.importance_sampling(jax.random.key(2), model, {"x": X}, num_particles=64,
                                    proposal=posterior, proposal_args=(X / 2, np.sqrt(0.5)))
    np.testing.assert_allclose(res.log_weights, LOG_Z, atol=1e-4)
    assert float(res.ess) == pytest.approx(64.0, rel=1e-4)


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_particles must be a positive int"):
        pg.mc.importance_sampling(jax.random.key(0), model, {"x": X}, num_particles=0)

    @pg.gen
    def wrong():
        pg.sample("w", pg.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="does not propose the latent address.*'z'"):
        pg.mc.importance_sampling(jax.random.key(0), model, {"x": X}, num_particles=4, proposal=wrong)


def test_the_call_compiles_once_and_reuses_the_program_for_new_data():
    traced = []

    @pg.gen
    def counted(noise):
        traced.append(1)  # runs only while JAX traces the model
        z = pg.sample("z", pg.Normal(0.0, 1.0))
        pg.sample("x", pg.Normal(z, noise))

    first = pg.mc.importance_sampling(jax.random.key(0), counted, {"x": 0.3}, 1.0, num_particles=256)
    count = len(traced)
    second = pg.mc.importance_sampling(jax.random.key(1), counted, {"x": X}, 1.0, num_particles=256)
    assert len(traced) == count and count > 0   # new key and observations: the same program
    ratio = np.exp(np.asarray(second.log_weights, np.float64) - LOG_Z)
    assert abs(ratio.mean() - 1.0) <= 4 * ratio.std() / np.sqrt(ratio.size)
    assert first.traces.choices["z"].shape == (256,)
    # Under pg.validate the run-time checks are traced in: a program of its own, not the cached one.
    checked = pg.validate(lambda k: pg.mc.importance_sampling(k, counted, {"x": X}, 1.0, num_particles=256))
    np.testing.assert_allclose(checked(jax.random.key(1)).log_weights, second.log_weights, rtol=1e-5)
    assert len(traced) > count
    # ... and the plain program stays plain (a checkify check outside pg.validate cannot run).
    pg.mc.importance_sampling(jax.random.key(2), counted, {"x": X}, 1.0, num_particles=256)
    with pytest.raises(pg.ValidationError, match="scale"):
        checked_bad = pg.validate(lambda k: pg.mc.importance_sampling(k, counted, {"x": X}, -1.0, num_particles=4))
        checked_bad(jax.random.key(0))

"""pg.Bernoulli: the logits log-mass against scipy, its gradient, soft labels, and the
numpyro behaviour it keeps (sampling, enumeration, validation, strategy lookup)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import stats

import probgen as pg

LOGITS = np.array([-30.0, -3.5, -0.2, 0.0, 0.7, 4.0, 30.0], np.float32)


@pytest.mark.parametrize("k", [0.0, 1.0])
def test_logits_log_mass_matches_scipy(k):
    logits = LOGITS.astype(np.float64)
    got = np.asarray(jax.jit(lambda l: pg.Bernoulli(logits=l).log_prob(k))(LOGITS))
    # closed form in float64: log σ(α) = -log(1 + e^-α), log(1 - σ(α)) = -log(1 + e^α)
    exact = -np.logaddexp(0.0, -logits) if k else -np.logaddexp(0.0, logits)
    np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-7)
    moderate = np.abs(logits) < 5  # scipy computes 1 - p, which loses digits at large |α|
    probs = 1.0 / (1.0 + np.exp(-logits[moderate]))
    np.testing.assert_allclose(got[moderate], stats.bernoulli.logpmf(k, probs), rtol=1e-5)


def test_gradient_and_soft_labels_agree_with_numpyro():
    # Soft labels are outside the support: numpyro's default validation would mask them.
    def ours(l, k):
        return jnp.sum(pg.Bernoulli(logits=l, validate_args=False).log_prob(k))

    def theirs(l, k):
        return jnp.sum(dist.BernoulliLogits(l, validate_args=False).log_prob(k))

    k = jnp.array([0.0, 1.0, 0.25, 1.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(ours(LOGITS, k), theirs(LOGITS, k), rtol=1e-6)
    # d/dα log p = k - σ(α), also at α = 0 (where numpyro's clip-based form returns k)
    np.testing.assert_allclose(jax.grad(ours)(LOGITS, k), k - jax.nn.sigmoid(LOGITS), rtol=1e-6, atol=1e-7)
    away_from_zero = LOGITS != 0
    np.testing.assert_allclose(jax.grad(ours)(LOGITS, k)[away_from_zero],
                               jax.grad(theirs)(LOGITS, k)[away_from_zero], rtol=1e-6, atol=1e-7)


def test_keeps_numpyro_sampling_enumeration_and_validation():
    d = pg.Bernoulli(logits=jnp.full((3,), 0.4))
    assert isinstance(d, dist.BernoulliLogits) and d.has_enumerate_support
    draws = d.sample(jax.random.key(0), (20000,))
    p = float(jax.nn.sigmoid(0.4))
    assert abs(float(draws.mean()) - p) < 4 * np.sqrt(p * (1 - p) / draws.size)
    assert d.enumerate_support().shape == (2, 3)
    with pytest.warns(UserWarning, match="Out-of-support"):
        assert float(pg.Bernoulli(logits=0.0, validate_args=True).log_prob(2.0)) == -np.inf
    assert isinstance(pg.Bernoulli(probs=0.3), dist.BernoulliProbs)
    with pytest.raises(ValueError, match="exactly one"):
        pg.Bernoulli()
    with pytest.raises(ValueError, match="exactly one"):
        pg.Bernoulli(probs=0.3, logits=0.0)


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_mvd_and_enum_estimators_still_find_the_logits_form():
    for strategy in (pg.ENUM, pg.MVD):
        @pg.gen
        def g(l, strategy=strategy):
            pg.sample("b", pg.with_strategy(pg.Bernoulli(logits=l), strategy))

        def prog(key, l, g=g):
            return 3.0 * g.simulate(key, l).choices["b"]

        grad = jax.grad(pg.vi.expectation(prog).estimate, argnums=1)(jax.random.key(0), 0.3)
        exact = 3.0 * jax.nn.sigmoid(0.3) * (1 - jax.nn.sigmoid(0.3))
        if strategy == pg.ENUM:
            np.testing.assert_allclose(grad, exact, rtol=1e-5)
        else:
            grads = jax.vmap(lambda k: jax.grad(pg.vi.expectation(prog).estimate, argnums=1)(k, 0.3))(
                jax.random.split(jax.random.key(1), 2000))
            assert abs(float(grads.mean()) - float(exact)) < 4 * float(grads.std()) / np.sqrt(2000) + 1e-6

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg

D = pg.diffusion
TARGET = D.gaussian_mixture([0.4, 0.6], [[-1.0, 1.0], [1.0, -0.5]], [0.5, 0.7])
SDE = D.vp()
T_MIN = 1e-3
POINTS = TARGET.sample(jax.random.key(0), 12)


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_exact_divergence_matches_mixture_log_density():
    fn = jax.jit(lambda k, x: D.log_likelihood(k, SDE, D.gmm_score(TARGET, SDE), x, num_steps=100, t_min=T_MIN))
    lp = fn(jax.random.key(1), POINTS)
    exact = TARGET.noised(SDE, T_MIN).log_prob(POINTS)
    np.testing.assert_allclose(lp, exact, atol=2e-2)
    # and against the clean data density (t_min is small)
    np.testing.assert_allclose(lp, TARGET.log_prob(POINTS), atol=5e-2)


def test_hutchinson_is_unbiased_for_the_log_density():
    fn = jax.jit(jax.vmap(lambda k: D.log_likelihood(k, SDE, D.gmm_score(TARGET, SDE), POINTS, num_steps=50,
                                                     t_min=T_MIN, divergence="hutchinson", num_probes=4)))
    reps = fn(jax.random.split(jax.random.key(2), 16))  # (16, points)
    mean, se = reps.mean(0), reps.std(0) / np.sqrt(reps.shape[0])
    exact = TARGET.noised(SDE, T_MIN).log_prob(POINTS)
    assert np.all(np.abs(mean - exact) < 4 * se + 2e-2), (mean - exact, se)
    assert float(reps.std(0).mean()) > 1e-3  # it really is stochastic


def test_likelihood_kernel_errors():
    with pytest.raises(ValueError, match="divergence"):
        D.likelihood_kernel(SDE, lambda x, t: -x, 10, divergence="trace")
    with pytest.raises(ValueError, match="num_points"):
        D.likelihood_kernel(SDE, lambda x, t: -x, 10).init(jnp.zeros(3))

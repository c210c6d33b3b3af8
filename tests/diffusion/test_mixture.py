import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import probgen as pg

D = pg.diffusion


def test_log_prob_and_score_match_scipy_and_autodiff():
    gmm = D.gaussian_mixture([0.2, 0.8], [[0.0, 1.0], [2.0, -1.0]],
                             [[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 2.0]]])
    x = jax.random.normal(jax.random.key(0), (7, 2))
    expected = np.log(0.2 * stats.multivariate_normal([0, 1], [[1, 0.3], [0.3, 0.5]]).pdf(x)
                      + 0.8 * stats.multivariate_normal([2, -1], [[0.4, 0], [0, 2]]).pdf(x))
    np.testing.assert_allclose(gmm.log_prob(x), expected, rtol=1e-5)
    auto = jax.vmap(jax.grad(gmm.log_prob))(x)
    np.testing.assert_allclose(gmm.score(x), auto, rtol=1e-4, atol=1e-5)


def test_noised_mixture_is_the_convolution():
    """p_t(x) = E_{x0}[N(x; alpha x0, sigma^2)], checked by Monte Carlo over x0."""
    sde = D.vp()
    gmm = D.gaussian_mixture([0.5, 0.5], [[-2.0], [2.0]], 0.5)
    t = 0.3
    x0 = gmm.sample(jax.random.key(1), 200000)
    a, s = sde.alpha(t), sde.sigma(t)
    points = jnp.array([[-1.5], [0.0], [1.0]])
    dens = jax.scipy.stats.norm.pdf(points[:, 0][:, None], a * x0[:, 0][None], s)
    mc, se = dens.mean(1), dens.std(1) / np.sqrt(x0.shape[0])
    exact = jnp.exp(gmm.noised(sde, t).log_prob(points))
    assert np.all(np.abs(mc - exact) < 4 * se)
    np.testing.assert_allclose(D.gmm_score(gmm, sde)(points, t), gmm.noised(sde, t).score(points))


def test_product_is_normalized_and_proportional():
    a = D.gaussian_mixture([0.3, 0.7], [[-1.0], [1.5]], [0.5, 1.0])
    b = D.gaussian_mixture([1.0], [[0.5]], 0.8)
    prod = D.mixture_product(a, b)
    grid = jnp.linspace(-8, 8, 4001)[:, None]
    unnorm = jnp.exp(a.log_prob(grid) + b.log_prob(grid))
    z = jnp.trapezoid(unnorm, grid[:, 0])
    np.testing.assert_allclose(jnp.exp(prod.log_prob(grid)), unnorm / z, atol=1e-5)


def test_sample_moments_and_errors():
    gmm = D.gaussian_mixture([1.0, 3.0], [[0.0, 0.0], [2.0, 2.0]], [1.0, 0.5])
    x = gmm.sample(jax.random.key(0), 50000)
    cov = np.asarray(gmm.cov())
    assert np.all(np.abs(x.mean(0) - gmm.mean()) < 4 * np.sqrt(np.diag(cov) / 50000))
    with pytest.raises(ValueError, match="means"):
        D.gaussian_mixture([0.5, 0.5], [[0.0]], 1.0)
    with pytest.raises(ValueError, match="trailing dim"):
        gmm.log_prob(jnp.zeros((3, 5)))

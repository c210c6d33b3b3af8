"""Guidance on a conjugate Gaussian: prior N(0, 1), observation c ~ N(x, tau^2), posterior closed form."""

import pytest
import jax
import jax.numpy as jnp
import numpy as np

import probgen as pg

D = pg.diffusion
SDE = D.vp()
TAU, C = 0.5, 1.2
PRIOR = D.gaussian_mixture([1.0], [[0.0]], 1.0)
POST_VAR = 1.0 / (1.0 + 1.0 / TAU**2)
POSTERIOR = D.gaussian_mixture([1.0], [[POST_VAR * C / TAU**2]], np.sqrt(POST_VAR))


def noisy_classifier_log_prob(x, t):
    """Exact log p_t(c | x_t): x0 | x_t is Gaussian, and c = x0 + tau noise."""
    a, s = SDE.alpha(t), SDE.sigma(t)
    var_post = 1.0 / (1.0 + a**2 / s**2)  # x0 | x_t with x0 ~ N(0, 1)
    mean_post = var_post * a * x[:, 0] / s**2
    return jax.scipy.stats.norm.logpdf(C, mean_post, jnp.sqrt(var_post + TAU**2))


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_classifier_guidance_with_exact_noisy_classifier_samples_the_posterior(check):
    score = D.classifier_guidance(D.gmm_score(PRIOR, SDE), noisy_classifier_log_prob, scale=1.0)
    x = jax.jit(lambda k: D.reverse_sample(k, SDE, score, (2000, 1), "euler_maruyama", 200))(jax.random.key(0))
    check(x, POSTERIOR, jax.random.key(0))


def test_classifier_free_guidance_interpolates_scores(check):
    cond, uncond = D.gmm_score(POSTERIOR, SDE), D.gmm_score(PRIOR, SDE)
    full = D.classifier_free_guidance(cond, uncond, scale=1.0)
    x = jax.jit(lambda k: D.reverse_sample(k, SDE, full, (2000, 1), "ddim", 100))(jax.random.key(1))
    check(x, POSTERIOR, jax.random.key(1))
    pts = jnp.linspace(-2, 2, 5)[:, None]
    w = 3.0
    np.testing.assert_allclose(D.classifier_free_guidance(cond, uncond, w)(pts, 0.3),
                               (1 - w) * uncond(pts, 0.3) + w * cond(pts, 0.3), rtol=1e-5, atol=1e-6)

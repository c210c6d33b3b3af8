import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import probgen as pg

D = pg.diffusion


def test_best_of_n_is_the_argmax_and_has_the_max_order_statistic_law():
    """With decode = identity and verifier = x, the result is the max of N normals: CDF Phi(x)^N."""
    n = 8
    fn = jax.jit(jax.vmap(lambda k: D.best_of_n(k, lambda z: z, lambda x: x[:, 0], (1,), n)))
    res = fn(jax.random.split(jax.random.key(0), 2000))
    np.testing.assert_array_equal(res.score, res.scores.max(1))
    np.testing.assert_allclose(res.sample[:, 0], res.score)
    ks = stats.kstest(np.asarray(res.score), lambda x: stats.norm.cdf(x) ** n)
    assert ks.pvalue > 0.01
    # ...and the same statistic rejects a smaller N.
    assert stats.kstest(np.asarray(res.score), lambda x: stats.norm.cdf(x) ** (n // 2)).pvalue < 1e-3


def test_local_search_over_ddim_noise_improves_the_verifier_monotonically():
    sde = D.vp()
    gmm = D.gaussian_mixture([0.5, 0.5], [[-2.0], [2.0]], 0.4)
    kernel = D.ddim(sde, D.gmm_score(gmm, sde), 30)

    def decode(noise):
        return pg.run(kernel, jax.random.key(0), kernel.init(noise), 30)[0].x

    def verifier(x):  # prefer the right mode, near 2.5
        return -jnp.abs(x[:, 0] - 2.5)

    noise0 = -jnp.ones((1,))  # starts in the left mode
    res = jax.jit(lambda k: D.local_search(k, decode, verifier, noise0, 40, num_neighbors=8, radius=0.5))(
        jax.random.key(1))
    init_score = float(verifier(decode(noise0[None]))[0])
    assert float(res.score) > init_score + 2.0  # crossed to the right mode
    np.testing.assert_allclose(verifier(decode(res.noise[None]))[0], res.score, atol=1e-5)
    kernel_s = D.zero_order_search(decode, verifier, 8, 0.5)
    _, (states, _) = pg.run(kernel_s, jax.random.key(1), kernel_s.init(noise0), 10, keep="all")
    assert np.all(np.diff(np.asarray(states.score)) >= 0)


def test_search_errors():
    with pytest.raises(ValueError, match="num_candidates"):
        D.best_of_n(jax.random.key(0), lambda z: z, lambda x: x[:, 0], (1,), 0)
    with pytest.raises(ValueError, match="verifier must return"):
        D.best_of_n(jax.random.key(0), lambda z: z, lambda x: x, (2,), 4)
    with pytest.raises(ValueError, match="radius"):
        D.zero_order_search(lambda z: z, lambda x: x[:, 0], 4, 0.0)

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


# ---- NaN verifier scores rank below every real score -----------------------------------------

def _nan_for_positive_second_coordinate(x):
    """Verifier: ``x_0`` but NaN wherever ``x_1 > 0`` (a verifier failing on half the inputs)."""
    return jnp.where(x[:, 1] > 0, jnp.nan, x[:, 0])


def test_best_of_n_never_returns_a_nan_candidate_when_a_real_one_exists():
    fn = jax.jit(jax.vmap(lambda k: D.best_of_n(k, lambda z: z, _nan_for_positive_second_coordinate, (2,), 16)))
    res = fn(jax.random.split(jax.random.key(0), 200))
    scores = np.asarray(res.scores)
    assert np.isnan(scores).any(axis=1).all()  # every batch has NaN candidates
    np.testing.assert_array_equal(res.score, np.nanmax(scores, axis=1))  # ground truth: best real score
    np.testing.assert_array_equal(res.sample[:, 0], res.score)
    assert np.all(res.sample[:, 1] <= 0)


def test_best_of_n_ranks_nan_below_minus_infinity_and_validates_all_nan():
    verifier = lambda x: jnp.array([jnp.nan, -jnp.inf, jnp.nan, -jnp.inf])  # noqa: E731
    res = D.best_of_n(jax.random.key(0), lambda z: z, verifier, (1,), 4)
    assert float(res.score) == -np.inf and float(res.noise[0]) == float(res.sample[0])
    all_nan = lambda x: jnp.full(x.shape[:1], jnp.nan)  # noqa: E731
    unchecked = D.best_of_n(jax.random.key(0), lambda z: z, all_nan, (1,), 4)
    assert np.isnan(float(unchecked.score))  # documented: the first candidate, score NaN
    with pytest.raises(pg.ValidationError, match="best_of_n: verifier returned NaN for all 4 candidates"):
        pg.validate(lambda k: D.best_of_n(k, lambda z: z, all_nan, (1,), 4))(jax.random.key(0))


def test_zero_order_search_treats_nan_neighbours_as_minus_infinity():
    """Same keys, so the same candidates: a NaN score must act exactly like -inf.

    The verifier fails (NaN) on every odd-indexed candidate of a batch, so each step has four
    NaN neighbours. On the old code the first NaN won the argmax and then failed the
    comparison with the pivot, so the pivot never moved.
    """
    target = jnp.array([2.0, -2.0])

    def make(failed_value):
        def verifier(x):
            score = -jnp.sum((x - target) ** 2, -1)
            return jnp.where(jnp.arange(x.shape[0]) % 2 == 1, failed_value, score)
        return D.zero_order_search(lambda z: z, verifier, 8, 0.5)

    start = jnp.array([-1.0, 0.5])  # far from the best direction (1, -1): score -15.25, best about -2.9
    runs = {}
    for label, value in (("nan", jnp.nan), ("ninf", -jnp.inf)):
        kernel = make(value)
        runs[label], _ = pg.run(kernel, jax.random.key(3), kernel.init(start), 30, keep="all")[1]
    init_score = float(make(-jnp.inf).init(start).score)
    assert float(runs["ninf"].score[-1]) > init_score + 5.0  # the search does move
    np.testing.assert_array_equal(runs["nan"].noise, runs["ninf"].noise)
    np.testing.assert_array_equal(runs["nan"].score, runs["ninf"].score)
    assert not np.isnan(np.asarray(runs["nan"].score)).any()


def test_zero_order_search_replaces_a_nan_pivot():
    verifier = lambda x: jnp.where(x[:, 0] < 0, jnp.nan, -jnp.abs(x[:, 0] - 1.0))  # noqa: E731
    kernel = D.zero_order_search(lambda z: z, verifier, 8, 1.0)
    state = kernel.init(jnp.array([-1.0, 0.0]))
    assert np.isnan(float(state.score))
    final, _ = pg.run(kernel, jax.random.key(0), state, 20)
    assert np.isfinite(float(final.score)) and float(final.noise[0]) >= 0

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg

D = pg.diffusion
SDE = D.vp()
# Two modes of different widths: tempering by beta = 2 moves mass to the narrow one.
MIXTURE = D.gaussian_mixture([0.5, 0.5], [[-1.5], [1.5]], [0.3, 0.8])
NUM_RUNS, NUM_PARTICLES, NUM_STEPS = 8, 1500, 200


def _se(per_run):
    return float(jnp.std(per_run, ddof=1)) / np.sqrt(per_run.shape[0])


def _right_mass_fkc(score_fns, betas):
    def one(key):
        x, lw = D.fkc_sample(key, SDE, score_fns, betas, (NUM_PARTICLES, 1), NUM_STEPS)
        return pg.mc.normalize_weights(lw) @ (x[:, 0] > 0), pg.mc.normalize_weights(lw) @ x[:, 0], x, lw

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), NUM_RUNS))


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_annealing_beta_2_matches_exact_tempered_mixture_where_score_scaling_does_not():
    tempered = D.mixture_product(MIXTURE, MIXTURE)  # exactly p^2 / Z
    exact_right = float(jnp.exp(tempered.log_weights) @ (tempered.means[:, 0] > 0))
    assert exact_right < 0.3  # theory: weights ∝ w_k^2 / sigma_k shift mass to the narrow mode
    right, mean, _, _ = _right_mass_fkc(*D.anneal(D.gmm_score(MIXTURE, SDE), 2.0))
    # Tolerance: 4 standard errors of the average over independent SMC runs (from their spread)
    # plus a 0.02 allowance for time discretization.
    tol = 4 * _se(right) + 0.02
    assert abs(float(right.mean()) - exact_right) < tol, (right, exact_right)
    assert abs(float(mean.mean()) - float(tempered.mean()[0])) < 0.15
    # Plain score scaling (2 x score, no weights) lands elsewhere.
    scaled = lambda x, t: 2.0 * D.gmm_score(MIXTURE, SDE)(x, t)  # noqa: E731
    x = jax.jit(lambda k: D.reverse_sample(k, SDE, scaled, (NUM_PARTICLES * NUM_RUNS, 1), "euler_maruyama",
                                           NUM_STEPS))(jax.random.key(1))
    plain_right = float((x[:, 0] > 0).mean())
    assert abs(plain_right - exact_right) > 0.1, plain_right


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_product_of_two_gaussian_experts_matches_exact_product():
    a = D.gaussian_mixture([1.0], [[-1.0]], 1.0)
    b = D.gaussian_mixture([1.0], [[2.0]], 0.6)
    prod = D.mixture_product(a, b)
    scores, betas = D.product_of_experts(D.gmm_score(a, SDE), D.gmm_score(b, SDE))
    _, mean, x, lw = _right_mass_fkc(scores, betas)
    w = jax.vmap(pg.mc.normalize_weights)(lw)
    second = jnp.sum(w * x[..., 0] ** 2, axis=1)
    var = second - mean**2
    exact_mean, exact_var = float(prod.means[0, 0]), float(prod.covs[0, 0, 0])
    # 4 standard errors across independent SMC runs, plus a discretization allowance.
    assert abs(float(mean.mean()) - exact_mean) < 4 * _se(mean) + 0.03, (mean, exact_mean)
    assert abs(float(var.mean()) - exact_var) < 4 * _se(var) + 0.05 * exact_var, (var, exact_var)
    # Summing the two scores without weights gives a visibly different variance.
    plain = jax.jit(lambda k: D.reverse_sample(k, SDE, lambda x, t: sum(s(x, t) for s in scores),
                                       (NUM_PARTICLES, 1), "euler_maruyama", NUM_STEPS))(jax.random.key(2))
    assert abs(float(plain.var()) - exact_var) > 0.2 * exact_var


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_fkc_guidance_matches_the_exact_guided_gaussian():
    """Target p^(1-w) p(x|c)^w with p = N(0, 1), p(x|c) = N(m, v), w = 2: a Gaussian in closed form."""
    m, v, w = 0.96, 0.2, 2.0
    prior = D.gaussian_mixture([1.0], [[0.0]], 1.0)
    cond = D.gaussian_mixture([1.0], [[m]], np.sqrt(v))
    precision = (1 - w) + w / v
    exact_mean, exact_var = (w * m / v) / precision, 1.0 / precision
    _, mean, x, lw = _right_mass_fkc(*D.fkc_guidance(D.gmm_score(prior, SDE), D.gmm_score(cond, SDE), w))
    wts = jax.vmap(pg.mc.normalize_weights)(lw)
    var = jnp.sum(wts * x[..., 0] ** 2, axis=1) - mean**2
    assert abs(float(mean.mean()) - exact_mean) < 4 * _se(mean) + 0.03, (mean, exact_mean)
    assert abs(float(var.mean()) - exact_var) < 4 * _se(var) + 0.05 * exact_var, (var, exact_var)


def test_ess_triggered_resampling_and_info():
    kernel = D.feynman_kac(SDE, *D.anneal(D.gmm_score(MIXTURE, SDE), 2.0), num_steps=50, ess_threshold=1.0)
    state = kernel.init(SDE.prior_sample(jax.random.key(0), (256, 1)) / np.sqrt(2.0))
    final, (states, infos) = jax.jit(lambda k, s: pg.run(kernel, k, s, 50, keep="all"))(jax.random.key(1), state)
    assert bool(jnp.all(infos.resampled[1:]))  # threshold 1 -> resample whenever weights are not uniform
    np.testing.assert_allclose(final.log_weights, final.log_weights[0])  # resampled: equal weights
    never = D.feynman_kac(SDE, *D.anneal(D.gmm_score(MIXTURE, SDE), 2.0), num_steps=50, ess_threshold=0.0)
    final, info = jax.jit(lambda k, s: pg.run(never, k, s, 50))(jax.random.key(1), state)
    assert not bool(info.resampled) and float(jnp.std(final.log_weights)) > 0


def test_guidance_betas_and_errors():
    scores, betas = D.fkc_guidance(lambda x, t: -x, lambda x, t: 1 - x, 3.0)
    assert betas == (-2.0, 3.0)
    with pytest.raises(ValueError, match="one beta per score"):
        D.feynman_kac(SDE, [lambda x, t: -x], [1.0, 2.0], 10)
    with pytest.raises(ValueError, match="sum to a positive"):
        D.feynman_kac(SDE, [lambda x, t: -x], [-1.0], 10)
    with pytest.raises(ValueError, match="scheme"):
        D.feynman_kac(SDE, [lambda x, t: -x], [1.0], 10, scheme="bogus")

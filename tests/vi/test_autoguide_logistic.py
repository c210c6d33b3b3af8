"""An autoguide on Bayesian logistic regression (breast cancer, standardized) against NUTS,
and the held-out log predictive density of ``pg.predictive`` against a hand computation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probgen as pg

sklearn_datasets = pytest.importorskip("sklearn.datasets")


@pg.gen
def logistic_regression(x):
    w = pg.sample("w", pg.Normal(jnp.zeros(x.shape[1]), 1.0))
    b = pg.sample("b", pg.Normal(0.0, 1.0))
    pg.sample("y", pg.Bernoulli(logits=x @ w + b))


def _split():
    data = sklearn_datasets.load_breast_cancer()
    features = (data.data - data.data.mean(0)) / data.data.std(0)
    order = np.random.default_rng(0).permutation(len(features))
    dtype = jnp.result_type(float)
    x, y = jnp.asarray(features[order], dtype), jnp.asarray(data.target[order], dtype)
    return (x[:400], y[:400]), (x[400:], y[400:])


@pytest.mark.slow  # a long NUTS reference run: the float64 pass skips it
def test_full_rank_autoguide_means_match_a_long_nuts_run_and_the_held_out_density_a_hand_computation():
    (x, y), (x_test, y_test) = _split()
    guide = pg.vi.autoguide(logistic_regression, {"y": y}, x, family="mvn")
    # The 465 scale parameters of the full-rank family converge slowly: 4 particles, a
    # decaying step (after 2000 steps at 0.02 the means were still 0.9 sd off).
    optimizer = optax.adam(optax.cosine_decay_schedule(0.03, 6000, 0.01))
    fitted = pg.fit(pg.vi.elbo(logistic_regression, guide, num_particles=4),
                    {"guide": guide.init_params(jax.random.key(0))}, optimizer, jax.random.key(1),
                    data=({"y": y}, x), steps=6000, progress=False)
    params = fitted.params["guide"]
    vi_draws = guide.sample_posterior(jax.random.key(2), params, 4000)

    nuts = pg.mc.run_mcmc(pg.mc.posterior(logistic_regression, {"y": y}, x), jax.random.key(3),
                          num_samples=1000, num_warmup=500, num_chains=2)
    summary = pg.mc.summary(nuts.samples)
    assert max(float(np.max(summary[name]["r_hat"])) for name in summary) < 1.01
    for name in ("w", "b"):
        nuts_draws = np.asarray(nuts.samples[name]).reshape((-1,) + nuts.samples[name].shape[2:])
        nuts_mean, nuts_sd = nuts_draws.mean(0), nuts_draws.std(0)
        vi_mean = np.asarray(vi_draws[name]).mean(0)
        # A Gaussian family on a near-Gaussian posterior (n = 400, 31 coefficients): the means
        # agree within 0.15 posterior standard deviations (measured: max 0.06, mean 0.02 sd;
        # the NUTS means' Monte Carlo error is about 0.03 sd), and so do the spreads.
        np.testing.assert_array_less(np.abs(vi_mean - nuts_mean) / nuts_sd, 0.15)
        np.testing.assert_allclose(np.asarray(vi_draws[name]).std(0), nuts_sd, rtol=0.15)

    # Held-out log predictive density: pg.predictive's pointwise log-likelihood on the same
    # draws equals log Bernoulli(y_i | sigmoid(x_i . w_s + b_s)) written by hand.
    draws = {"w": vi_draws["w"][:500], "b": vi_draws["b"][:500]}
    held_out = pg.predictive(logistic_regression, draws, x_test, key=jax.random.key(4),
                             observations={"y": y_test})
    logits = draws["w"] @ x_test.T + draws["b"][:, None]
    by_hand = y_test * jax.nn.log_sigmoid(logits) + (1 - y_test) * jax.nn.log_sigmoid(-logits)
    np.testing.assert_allclose(held_out.log_likelihood["y"], by_hand, rtol=1e-5, atol=1e-5)
    lpd = jax.scipy.special.logsumexp(held_out.log_likelihood["y"], axis=0) - np.log(500)
    lpd_by_hand = jax.scipy.special.logsumexp(by_hand, axis=0) - np.log(500)
    np.testing.assert_allclose(lpd.sum(), lpd_by_hand.sum(), rtol=1e-5)
    assert float(lpd.mean()) > -0.2  # a good classifier: about -0.08 per held-out point

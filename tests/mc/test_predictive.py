"""pg.predictive: posterior predictive draws against closed forms, pointwise log-likelihoods
against scipy for a vector site, a plate and a scan, every kind of posterior, ArviZ's loo/waic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

import probgen as pg
from probgen.core import handlers

# y_i ~ N(mu, 1), mu ~ N(0, 1): mu | y ~ N(sum(y) / (n + 1), 1 / (n + 1)); a new point
# y_new | y ~ N(sum(y) / (n + 1), 1 + 1 / (n + 1)).
Y_TRAIN = np.array([0.9, 1.4, 0.2])
Y_HELD_OUT = np.array([0.3, -0.5, 1.8])
POST_MEAN, POST_VAR = Y_TRAIN.sum() / 4, 1 / 4
NUM_DRAWS = 4000


@pg.gen
def conjugate(template):
    mu = pg.sample("mu", pg.Normal(0.0, 1.0))
    pg.sample("y", pg.Normal(jnp.full(template.shape, mu), 1.0))
    pg.sample("y_new", pg.Normal(mu, 1.0))


@pg.gen
def prior():
    return pg.sample("mu", pg.Normal(0.0, 1.0)), pg.sample("sigma", pg.HalfNormal(1.0))


@pg.gen
def point(mu, sigma, x):
    return pg.sample("y", pg.Normal(mu + x, sigma))


@pg.gen
def regression(xs):
    mu, sigma = pg.sample("prior", prior)
    pg.sample("data", pg.vmap(point, in_axes=(None, None, 0)), mu, sigma, xs)


@pg.gen
def walk_step(z, _):
    z = pg.sample("z", pg.Normal(0.9 * z, 1.0))
    pg.sample("y", pg.Normal(z, 0.5))
    return z, None


WALK = pg.scan(walk_step, length=6)


def _template():
    return jnp.zeros(3, jnp.asarray(0.0).dtype)


@pytest.fixture(scope="module")
def conjugate_run():
    dtype = jnp.asarray(0.0).dtype
    mu = POST_MEAN + np.sqrt(POST_VAR) * jax.random.normal(jax.random.key(0), (NUM_DRAWS,), dtype)
    result = pg.predictive(conjugate, {"mu": mu}, _template(), key=jax.random.key(1),
                           observations={"y": jnp.asarray(Y_TRAIN, dtype)})
    return mu, result


def test_predictive_draws_match_the_closed_form_posterior_predictive(conjugate_run):
    mu, result = conjugate_run
    assert result.sample_shape == (NUM_DRAWS,) and result.log_weights is None
    np.testing.assert_array_equal(result.posterior["mu"], mu)
    np.testing.assert_array_equal(result.draws["mu"], mu)
    var = 1 + POST_VAR
    for draws in (np.asarray(result.draws["y_new"]), np.asarray(result.draws["y"])[:, 1]):
        assert draws.shape == (NUM_DRAWS,) and draws.dtype == mu.dtype
        assert abs(draws.mean() - POST_MEAN) < 4 * np.sqrt(var / NUM_DRAWS)
        assert abs(draws.var() - var) < 4 * var * np.sqrt(2 / (NUM_DRAWS - 1))
        assert stats.kstest(draws, "norm", args=(POST_MEAN, np.sqrt(var))).pvalue > 1e-3
    # Observed sites are redrawn, not fixed to the data.
    assert not np.allclose(result.draws["y"][0], Y_TRAIN)


def test_pointwise_log_likelihood_of_a_vector_site_and_held_out_density(conjugate_run):
    mu, result = conjugate_run
    mu64 = np.asarray(mu, np.float64)[:, None]
    assert result.log_likelihood["y"].shape == (NUM_DRAWS, 3) and result.log_likelihood["y"].dtype == mu.dtype
    np.testing.assert_allclose(result.log_likelihood["y"], stats.norm.logpdf(Y_TRAIN, mu64, 1.0), rtol=1e-5,
                               atol=1e-5)
    assert set(result.log_likelihood) == {"y"}
    np.testing.assert_array_equal(result.observations["y"], Y_TRAIN.astype(mu.dtype))

    held_out = pg.predictive(conjugate, {"mu": mu}, _template(), key=jax.random.key(2),
                             observations={"y": jnp.asarray(Y_HELD_OUT, mu.dtype)})
    lpd = pg.mc.log_mean_exp(held_out.log_likelihood["y"].sum(axis=1))
    hand = special.logsumexp(stats.norm.logpdf(Y_HELD_OUT, mu64, 1.0).sum(axis=1)) - np.log(NUM_DRAWS)
    assert abs(float(lpd) - hand) < 1e-4


def test_pointwise_log_likelihood_through_a_plate_with_chain_axes():
    rng = np.random.default_rng(0)
    dtype = jnp.asarray(0.0).dtype
    xs, ys = jnp.linspace(-1.0, 1.0, 5, dtype=dtype), jnp.asarray(rng.normal(size=5), dtype)
    mu = jnp.asarray(rng.normal(size=(2, 25)), dtype)
    sigma = jnp.asarray(rng.uniform(0.5, 2.0, size=(2, 25)), dtype)
    result = pg.predictive(regression, {"prior/mu": mu, "prior/sigma": sigma}, xs, key=jax.random.key(3),
                           observations={("data", "y"): ys})
    assert result.sample_shape == (2, 25)
    assert result.draws["data/y"].shape == (2, 25, 5) and result.log_likelihood["data/y"].shape == (2, 25, 5)
    hand = stats.norm.logpdf(np.asarray(ys), np.asarray(mu)[..., None] + np.asarray(xs), np.asarray(sigma)[..., None])
    np.testing.assert_allclose(result.log_likelihood["data/y"], hand, rtol=1e-5, atol=1e-5)

    only = pg.predictive(regression, {"prior/mu": mu, "prior/sigma": sigma}, xs, key=jax.random.key(3),
                         observations={("data", "y"): ys}, return_sites=["data"])
    assert set(only.draws) == {"data/y"}


def test_pointwise_log_likelihood_through_a_scan_from_weighted_paths():
    # Weighted trajectories (a smoother's output) with all weight on path 7: every resampled
    # draw is that path, its observed site is drawn afresh, and the log-likelihood is per step.
    rng = np.random.default_rng(1)
    dtype = jnp.asarray(0.0).dtype
    zs, ys = jnp.asarray(rng.normal(size=(40, 6)), dtype), jnp.asarray(rng.normal(size=6), dtype)
    paths = pg.mc.SmoothedPaths(pg.ChoiceMap({"z": zs, "y": jnp.broadcast_to(ys, (40, 6))}), None,
                                jnp.full(40, -jnp.inf, dtype).at[7].set(0.0))
    result = pg.predictive(WALK, paths, 0.0, None, key=jax.random.key(5), observations={"y": ys}, num_samples=30)
    assert result.sample_shape == (30,) and result.log_weights is None
    np.testing.assert_array_equal(result.posterior["z"], jnp.broadcast_to(zs[7], (30, 6)))
    assert result.log_likelihood["y"].shape == (30, 6) and not np.allclose(result.draws["y"][0], ys)
    hand = stats.norm.logpdf(np.asarray(ys), np.asarray(zs[7]), 0.5)
    np.testing.assert_allclose(result.log_likelihood["y"], np.broadcast_to(hand, (30, 6)), rtol=1e-5, atol=1e-5)


def test_pointwise_scores_handler_keeps_batch_elements():
    choices = {"mu": 0.3, "y": jnp.array([0.9, 1.4, 0.2]), "y_new": 0.0}
    plain, _ = conjugate.generate(jax.random.key(0), choices, jnp.zeros(3))
    with handlers.handle(handlers.PointwiseScores()):
        pointwise, _ = conjugate.generate(jax.random.key(0), choices, jnp.zeros(3))
    assert plain.site_scores["y"].shape == () and pointwise.site_scores["y"].shape == (3,)
    np.testing.assert_allclose(pointwise.site_scores["y"], stats.norm.logpdf(choices["y"], 0.3, 1.0), rtol=1e-5)
    np.testing.assert_allclose(pointwise.score, plain.score, rtol=1e-6)


def test_mcmc_result_keeps_chain_and_draw_axes():
    mu = POST_MEAN + np.sqrt(POST_VAR) * np.random.default_rng(2).normal(size=(2, NUM_DRAWS // 2))
    mu = jnp.asarray(mu, jnp.asarray(0.0).dtype)
    fake = pg.mc.MCMCResult({"mu": mu}, None, None, None, None)
    result = pg.predictive(conjugate, fake, _template(), key=jax.random.key(6),
                           observations={"y": jnp.asarray(Y_TRAIN, mu.dtype)})
    assert result.sample_shape == (2, NUM_DRAWS // 2)
    assert result.draws["y_new"].shape == (2, NUM_DRAWS // 2)
    assert result.log_likelihood["y"].shape == (2, NUM_DRAWS // 2, 3)
    np.testing.assert_allclose(result.log_likelihood["y"], stats.norm.logpdf(Y_TRAIN, np.asarray(mu)[..., None], 1.0),
                               rtol=1e-5, atol=1e-5)
    az = pytest.importorskip("arviz")
    data = result.to_arviz()
    assert data["posterior"]["mu"].dims == ("chain", "draw") and data["posterior"]["mu"].shape == mu.shape
    assert data["log_likelihood"]["y"].shape == (*mu.shape, 3)
    assert np.isfinite(az.loo(data).elpd_loo)


def test_importance_result_is_resampled_by_its_weights():
    observations = {"y": jnp.asarray(Y_TRAIN, jnp.asarray(0.0).dtype)}
    particles = pg.mc.importance_sampling(jax.random.key(7), conjugate, observations, _template(), num_particles=50)
    degenerate = particles._replace(log_weights=jnp.full(50, -jnp.inf, particles.log_weights.dtype).at[3].set(0.0))
    result = pg.predictive(conjugate, degenerate, _template(), key=jax.random.key(8), observations=observations,
                           num_samples=50)
    assert result.sample_shape == (50,) and result.log_weights is None
    np.testing.assert_array_equal(result.posterior["mu"], jnp.full(50, particles.traces["mu"][3]))

    kept = pg.predictive(conjugate, particles, _template(), key=jax.random.key(8), observations=observations)
    np.testing.assert_array_equal(kept.posterior["mu"], particles.traces["mu"])
    np.testing.assert_allclose(jnp.exp(kept.log_weights), pg.mc.normalize_weights(particles.log_weights), rtol=1e-5)
    with pytest.raises(pg.SettingError, match="weighted"):
        kept.to_arviz()


def test_guides_as_posteriors():
    @pg.gen
    def exact_guide(params, template):
        pg.sample("mu", pg.Normal(params["loc"], params["scale"]))

    params = {"loc": jnp.asarray(POST_MEAN), "scale": jnp.asarray(np.sqrt(POST_VAR))}
    result = pg.predictive(conjugate, (exact_guide, params), _template(), key=jax.random.key(9), num_samples=NUM_DRAWS)
    draws = np.asarray(result.posterior["mu"])
    assert abs(draws.mean() - POST_MEAN) < 4 * np.sqrt(POST_VAR / NUM_DRAWS)
    assert result.log_likelihood is None and result.draws["y_new"].shape == (NUM_DRAWS,)

    class FittedGuide:  # the duck type of a pg.vi autoguide
        def sample_posterior(self, key, params, num_samples):
            return {"mu": params["loc"] + jnp.arange(num_samples, dtype=params["loc"].dtype)}

    fitted = pg.predictive(conjugate, (FittedGuide(), params), _template(), key=jax.random.key(9),
                           num_samples=NUM_DRAWS)
    np.testing.assert_array_equal(fitted.posterior["mu"], POST_MEAN + np.arange(NUM_DRAWS))


def test_runs_under_an_outer_jit(conjugate_run):
    mu, result = conjugate_run

    @jax.jit
    def log_likelihood(mu, key):
        return pg.predictive(conjugate, {"mu": mu}, _template(), key=key,
                             observations={"y": jnp.asarray(Y_TRAIN, mu.dtype)}).log_likelihood["y"]

    np.testing.assert_allclose(log_likelihood(mu, jax.random.key(1)), result.log_likelihood["y"], rtol=1e-6)


def test_arviz_waic_and_loo_match_the_hand_formula(conjugate_run):
    az = pytest.importorskip("arviz")
    mu, result = conjugate_run
    data = result.to_arviz()
    assert set(data["posterior_predictive"].data_vars) == {"y", "y_new"}
    np.testing.assert_array_equal(data["observed_data"]["y"], result.observations["y"])
    log_lik = np.asarray(result.log_likelihood["y"], np.float64)
    lppd = special.logsumexp(log_lik, axis=0) - np.log(NUM_DRAWS)
    elpd_waic = np.sum(lppd - log_lik.var(axis=0))
    waic = az.waic(data)
    assert abs(waic.elpd_waic - elpd_waic) < 1e-3 * max(1.0, abs(elpd_waic))
    loo = az.loo(data)
    assert abs(loo.elpd_loo - elpd_waic) < 0.1   # both estimate the same elpd; 3 well-behaved points


def test_bad_input_names_the_culprit():
    mu = jnp.zeros(10)
    observations = {"y": jnp.asarray(Y_TRAIN)}
    with pytest.raises(pg.AddressError, match="'nu'"):
        pg.predictive(conjugate, {"nu": mu}, _template(), key=jax.random.key(0))
    with pytest.raises(pg.AddressError, match="'y'.*both"):
        pg.predictive(conjugate, {"mu": mu, "y": jnp.zeros((10, 3))}, _template(), key=jax.random.key(0),
                      observations=observations)
    with pytest.raises(pg.AddressError, match="'ys'"):
        pg.predictive(conjugate, {"mu": mu}, _template(), key=jax.random.key(0), observations={"ys": Y_TRAIN})
    with pytest.raises(pg.AddressError, match="return_sites.*'nope'"):
        pg.predictive(conjugate, {"mu": mu}, _template(), key=jax.random.key(0), return_sites=["nope"])
    with pytest.raises(pg.ConstraintError, match="leading"):
        pg.predictive(regression, {"prior/mu": mu, "prior/sigma": jnp.ones(12)}, jnp.zeros(5), key=jax.random.key(0))
    with pytest.raises(pg.ConstraintError, match="'z'.*\\(6,\\)"):
        pg.predictive(WALK, {"z": jnp.zeros((10, 7))}, 0.0, None, key=jax.random.key(0))
    with pytest.raises(pg.SettingError, match="num_samples"):
        pg.predictive(conjugate, {"mu": mu}, _template(), key=jax.random.key(0), num_samples=5)
    with pytest.raises(pg.ArgumentError, match="posterior must be"):
        pg.predictive(conjugate, [mu], _template(), key=jax.random.key(0))
    paths = pg.mc.SmoothedPaths(pg.ChoiceMap({"z": jnp.zeros((4, 6)), "y": jnp.zeros((4, 6))}), None, jnp.zeros(4))
    with pytest.raises(pg.ArgumentError, match="observations="):
        pg.predictive(WALK, paths, 0.0, None, key=jax.random.key(0))

    @pg.gen
    def guide(params, template):
        pg.sample("mu", pg.Normal(params, 1.0))

    with pytest.raises(pg.SettingError, match="num_samples"):
        pg.predictive(conjugate, (guide, 0.0), _template(), key=jax.random.key(0))

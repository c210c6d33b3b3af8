"""NUTS, window adaptation and model posteriors in unconstrained space, against exact posteriors.

Ground truths: eight schools by 2-D quadrature over (mu, tau) with the school effects
integrated in closed form; a HalfCauchy scale by 1-D quadrature; a linear-Gaussian
state-space model inside ``pg.scan`` by the Rauch–Tung–Striebel smoother; a 100-D
correlated Gaussian's covariance. Tolerances are 4 Monte Carlo standard errors, the
standard error from the draws' bulk ESS.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize

import probgen as pg
from tests.mc import lgssm

Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


@pg.gen
def schools(sigma):
    mu = pg.sample("mu", pg.Normal(0.0, 5.0))
    tau = pg.sample("tau", pg.dist.HalfCauchy(5.0))
    theta_t = pg.sample("theta_t", pg.Normal(jnp.zeros(8), 1.0))
    pg.sample("y", pg.Normal(mu + tau * theta_t, sigma))


def schools_truth():
    """Exact posterior means and sds of mu, tau, theta_t by quadrature on a (mu, tau) grid."""
    mu = np.linspace(-25.0, 35.0, 601)
    tau = np.concatenate([np.linspace(1e-4, 1.0, 400), np.exp(np.linspace(0.0, np.log(400.0), 1600))[1:]])
    M, T = np.meshgrid(mu, tau, indexing="ij")
    var = SIGMA**2 + T[..., None] ** 2
    log_p = (-0.5 * M**2 / 25.0 - np.log1p((T / 5.0) ** 2)
             - 0.5 * np.sum(np.log(var) + (Y - M[..., None]) ** 2 / var, axis=-1))
    w = np.exp(log_p - log_p.max()) * np.gradient(tau)[None, :]
    w /= w.sum()
    # theta_j | mu, tau, y is normal; theta_t = (theta - mu) / tau.
    v = 1.0 / (1.0 / SIGMA**2 + 1.0 / T[..., None] ** 2)
    m = v * (Y / SIGMA**2 + M[..., None] / T[..., None] ** 2)
    t_mean, t_var = (m - M[..., None]) / T[..., None], v / T[..., None] ** 2

    def moments(mean, var=0.0):
        e = np.tensordot(w, mean, axes=([0, 1], [0, 1]))
        e2 = np.tensordot(w, var + mean**2, axes=([0, 1], [0, 1]))
        return e, np.sqrt(e2 - e**2)

    return {"mu": moments(M), "tau": moments(T), "theta_t": moments(t_mean, t_var)}


def _check_moments(draws, mean, sd, name):
    """Means and sds within 4 Monte Carlo standard errors (SE from bulk ESS)."""
    draws = np.asarray(draws, np.float64)
    flat = draws.reshape(draws.shape[:2] + (-1,))
    mean, sd = np.atleast_1d(mean), np.atleast_1d(sd)
    for i in range(flat.shape[-1]):
        x = flat[..., i]
        ess = float(pg.mc.bulk_ess(x))
        ess_sq = float(pg.mc.bulk_ess((x - x.mean()) ** 2))
        se_mean = sd[i] / np.sqrt(ess)
        # sd's SE by the delta method on the second central moment: sd(x^2-ish) / (2 sd sqrt(ESS)).
        se_sd = np.std((x - x.mean()) ** 2) / (2 * sd[i] * np.sqrt(ess_sq))
        assert abs(x.mean() - mean[i]) < 4 * se_mean, (name, i, x.mean(), mean[i], se_mean)
        assert abs(x.std() - sd[i]) < 4 * se_sd, (name, i, x.std(), sd[i], se_sd)


@pytest.fixture(scope="module")
def schools_run():
    post = pg.mc.posterior(schools, {"y": jnp.asarray(Y)}, jnp.asarray(SIGMA))
    return pg.mc.run_mcmc(post, jax.random.key(0), 1000, num_warmup=1000, num_chains=4)


@pytest.mark.slow
def test_eight_schools_matches_quadrature(schools_run):
    truth = schools_truth()
    for name, (mean, sd) in truth.items():
        _check_moments(schools_run.samples[name], mean, sd, name)
    table = pg.mc.summary(schools_run.samples)
    assert max(float(np.max(stats["r_hat"])) for stats in table.values()) < 1.01
    assert int(schools_run.infos.is_divergent.sum()) < 10  # non-centered: at most a handful


@pytest.mark.slow
def test_eight_schools_adapted_acceptance(schools_run):
    # Dual averaging steers the warmup's acceptance to 0.8; the sampling phase's mean acceptance
    # with the adapted step size is measured here (Stan and NumPyro end near 0.87-0.9).
    acceptance = float(schools_run.infos.acceptance_rate.mean())
    assert abs(acceptance - 0.8) < 0.05, acceptance


@pytest.mark.slow
def test_positive_scale_matches_quadrature():
    ys = np.array([0.3, -1.2, 0.8, 2.1, -0.4])

    @pg.gen
    def scale_model():
        s = pg.sample("s", pg.dist.HalfCauchy(1.0))
        pg.sample("ys", pg.Normal(jnp.zeros(5), s))

    def density(s):
        return (1.0 / (1.0 + s**2)) * np.prod(np.exp(-0.5 * ys**2 / s**2) / s)

    z = integrate.quad(density, 0, np.inf)[0]
    mean = integrate.quad(lambda s: s * density(s), 0, np.inf)[0] / z
    sd = np.sqrt(integrate.quad(lambda s: s**2 * density(s), 0, np.inf)[0] / z - mean**2)
    post = pg.mc.posterior(scale_model, {"ys": jnp.asarray(ys)})
    result = pg.mc.run_mcmc(post, jax.random.key(1), 1500, num_warmup=500, num_chains=4)
    draws = np.asarray(result.samples["s"], np.float64)
    assert bool((draws > 0).all())
    ess = float(pg.mc.bulk_ess(draws))
    assert abs(draws.mean() - mean) < 4 * sd / np.sqrt(ess)
    # The posterior's right tail is heavy (its 6th moment is infinite): check quantiles, whose
    # standard error sqrt(p (1 - p) / ESS) / density(q) needs no moments.
    for p in (0.1, 0.5, 0.9):
        q = optimize.brentq(lambda t: integrate.quad(density, 0, t)[0] / z - p, 1e-3, 50.0)
        se = np.sqrt(p * (1 - p) / ess) / (density(q) / z)
        assert abs(np.quantile(draws, p) - q) < 4 * se, (p, np.quantile(draws, p), q, se)


@pytest.mark.slow
def test_state_space_latents_in_scan_match_rts():
    num_steps = 15
    ys = lgssm.simulate(3, num_steps)

    @pg.gen
    def ssm():
        return pg.sample("path", pg.scan(lgssm.lg_step, length=num_steps), 0.0, None)

    post = pg.mc.posterior(ssm, {"path": {"y": jnp.asarray(ys)}})
    assert post.names == ("path/z",)
    result = pg.mc.run_mcmc(post, jax.random.key(2), 600, num_warmup=400, num_chains=4)
    means, variances, _ = lgssm.kalman(ys)
    smooth_mean, smooth_var = lgssm.rts(means, variances)
    _check_moments(result.samples["path/z"], smooth_mean, np.sqrt(smooth_var), "path/z")


@pytest.mark.slow
def test_dense_mass_on_correlated_gaussian():
    dim = 100
    idx = np.arange(dim)
    scales = np.exp(np.linspace(-1.0, 1.0, dim))
    cov = 0.9 ** np.abs(idx[:, None] - idx[None, :]) * np.outer(scales, scales)
    precision = jnp.asarray(np.linalg.inv(cov), jnp.float32)

    def logdensity(x):
        return -0.5 * x @ precision @ x

    result = pg.mc.run_mcmc(logdensity, jax.random.key(3), 400, num_warmup=400, num_chains=4, dense_mass=True,
                            init_positions=jnp.zeros((4, dim)))
    # Whitened by the true covariance the draws are N(0, I): the eigenvalues of their sample
    # covariance lie in the Marchenko-Pastur range (1 -+ sqrt(d / n))^2 for n effective draws.
    whitened = np.asarray(result.samples, np.float64) @ np.linalg.inv(np.linalg.cholesky(cov)).T
    n_eff = min(float(pg.mc.bulk_ess(whitened[..., i])) for i in range(dim))
    eigenvalues = np.linalg.eigvalsh(np.cov(whitened.reshape(-1, dim), rowvar=False))
    spread = 1.25 * np.sqrt(dim / n_eff)
    assert (1 - spread) ** 2 < eigenvalues.min() and eigenvalues.max() < (1 + spread) ** 2, (eigenvalues, n_eff)
    # The adapted dense inverse mass matrix is the covariance (up to warmup noise).
    adapted = np.asarray(result.inverse_mass_matrix[0], np.float64)
    assert np.linalg.norm(adapted - cov) / np.linalg.norm(cov) < 0.25


def test_logdensity_carries_the_log_det_jacobian():
    @pg.gen
    def model():
        pg.sample("s", pg.LogNormal(0.3, 0.7))
        pg.sample("p", pg.Beta(2.0, 3.0))

    post = pg.mc.posterior(model, {})
    u = {"s": jnp.asarray(0.5), "p": jnp.asarray(-0.4)}
    p = jax.nn.sigmoid(-0.4)
    # log s ~ N(0.3, 0.7); logit p has density Beta(p) * p (1 - p).
    expected = pg.Normal(0.3, 0.7).log_prob(0.5) + pg.Beta(2.0, 3.0).log_prob(p) + jnp.log(p * (1 - p))
    assert jnp.allclose(post.logdensity(u), expected, atol=1e-5)
    values = post.constrain(u)
    assert jnp.allclose(values["s"], jnp.exp(0.5)) and jnp.allclose(values["p"], p)
    back = post.unconstrain(values)
    assert jnp.allclose(back["s"], 0.5, atol=1e-5) and jnp.allclose(back["p"], -0.4, atol=1e-5)


def test_trace_hmc_moves_a_positive_scale_in_unconstrained_space():
    # Without the map to the real line a step of 0.5 from s = 0.05 proposes negative scales.
    @pg.gen
    def model():
        s = pg.sample("s", pg.HalfNormal(1.0))
        pg.sample("y", pg.Normal(0.0, s))

    trace, _ = model.generate(jax.random.key(0), {"s": 0.05, "y": 0.01})
    kernel = pg.mc.hmc(pg.select("s"), step_size=0.5, num_leapfrog_steps=3)
    _, (traces, infos) = pg.run(kernel, jax.random.key(1), kernel.init(trace), 300, keep="all")
    assert bool((traces.choices["s"] > 0).all())
    assert float(infos.acceptance_rate.mean()) > 0.5


def test_errors_name_what_is_wrong():
    @pg.gen
    def mixed():
        pg.sample("k", pg.Poisson(3.0))
        pg.sample("z", pg.Normal(0.0, 1.0))

    with pytest.raises(pg.ArgumentError, match="'k'"):
        pg.mc.posterior(mixed, {})
    post = pg.mc.posterior(mixed, {"k": 2})
    with pytest.raises(pg.ArgumentError, match="latents"):
        post.logdensity({"x": jnp.zeros(())})
    with pytest.raises(pg.ArgumentError, match="init_positions"):
        pg.mc.run_mcmc(lambda x: -jnp.sum(x**2), jax.random.key(0), 10, num_warmup=10)
    with pytest.raises(pg.ArgumentError, match="inverse_mass_matrix"):
        pg.mc.nuts(lambda x: -jnp.sum(x**2), 0.1, jnp.ones(3)).init(jnp.zeros(2))
    with pytest.raises(pg.ArgumentError, match="posterior"):
        pg.mc.nuts(mixed, 0.1)
    with pytest.raises(pg.SettingError, match="algorithm"):
        pg.mc.window_adaptation(lambda x: -jnp.sum(x**2), 100, algorithm="mala")


def test_dtype_is_kept():
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    result = pg.mc.run_mcmc(lambda x: -0.5 * jnp.sum(x**2), jax.random.key(0), 50, num_warmup=50, num_chains=2,
                            init_positions=jnp.zeros((2, 3), dtype))
    assert result.samples.dtype == dtype and result.step_size.dtype == dtype
    sequential = pg.mc.run_mcmc(lambda x: -0.5 * jnp.sum(x**2), jax.random.key(0), 50, num_warmup=50,
                                num_chains=2, init_positions=jnp.zeros((2, 3), dtype), chain_method="sequential")
    assert sequential.samples.shape == (2, 50, 3)


@pytest.mark.parametrize("make", [
    lambda f: pg.mc.hmc(f, step_size=0.4, num_leapfrog_steps=8, inverse_mass_matrix=jnp.array([1.0, 4.0])),
    lambda f: pg.mc.mala(f, step_size=0.3),
    lambda f: pg.mc.mh(f, scale=1.5),
    lambda f: pg.mc.nuts(f, step_size=0.6, inverse_mass_matrix=jnp.array([1.0, 4.0])),
], ids=["hmc", "mala", "mh", "nuts"])
def test_position_kernels_sample_a_gaussian(make):
    mean, sd = np.array([1.0, -2.0]), np.array([1.0, 2.0])

    def logdensity(x):
        return -0.5 * jnp.sum(((x - mean) / sd) ** 2)

    kernel = make(logdensity)
    init = jax.vmap(kernel.init)(jnp.zeros((4, 2)))
    run = jax.vmap(lambda k, s: pg.run(kernel, k, s, 1500, keep=lambda state: state.position)[1][0])
    draws = np.asarray(run(jax.random.split(jax.random.key(5), 4), init))[:, 300:]
    _check_moments(draws, mean, sd, "x")


def test_unconstrained_coordinates_pass_validation():
    # u = -0.5 is a valid coordinate of a HalfNormal site (s = exp(-0.5)); validation checks s, not u.
    @pg.gen
    def model():
        pg.sample("s", pg.HalfNormal(1.0))

    post = pg.mc.posterior(model, {})
    value = pg.validate(post.logdensity)({"s": jnp.asarray(-0.5)})
    assert jnp.allclose(value, pg.HalfNormal(1.0).log_prob(jnp.exp(-0.5)) - 0.5, atol=1e-5)


def test_short_warmup_still_tunes_the_step_size():
    # With 50 warmup steps the final window has 5: no low-gain refinement there (it once handed
    # sampling a step from the first iterates after a restart: ~40-50% divergent draws).
    post = pg.mc.posterior(schools, {"y": jnp.asarray(Y)}, jnp.asarray(SIGMA))
    result = pg.mc.run_mcmc(post, jax.random.key(0), 500, num_warmup=50, num_chains=4)
    assert int(result.infos.is_divergent.sum()) < 100     # of 2000 draws
    assert bool(jnp.all(result.step_size < 1.0))

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg

D = pg.diffusion
SDES = {"vp": D.vp(), "vp_cosine": D.vp_cosine(), "ve": D.ve(), "subvp": D.subvp()}


@pytest.mark.parametrize("name", list(SDES))
def test_marginals_solve_the_moment_odes(name):
    """d mean/dt = f mean and d var/dt = 2 f var + g^2 for the stated alpha(t), sigma(t)."""
    sde = SDES[name]
    ts = jnp.linspace(0.05, sde.t_max - 0.02, 17)
    dalpha = jax.vmap(jax.grad(sde.alpha))(ts)
    dvar = jax.vmap(jax.grad(lambda t: sde.sigma(t) ** 2))(ts)
    alpha, var = jax.vmap(sde.alpha)(ts), jax.vmap(sde.sigma)(ts) ** 2
    f, g2 = jax.vmap(sde.f)(ts), jax.vmap(sde.g2)(ts)
    np.testing.assert_allclose(dalpha, f * alpha, rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(dvar, 2 * f * var + g2, rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize("name", list(SDES))
def test_prior_matches_terminal_marginal(name):
    sde = SDES[name]
    x0 = jnp.array([[0.7, -1.3]])
    mean, std = sde.marginal(x0, sde.t_max)
    assert float(jnp.max(jnp.abs(mean))) < 0.05 * sde.prior_std + 0.02
    assert abs(float(std) - sde.prior_std) < 0.01 * sde.prior_std
    assert float(sde.alpha(0.0)) == pytest.approx(1.0)


def test_forward_em_simulation_matches_marginal():
    """Simulating the forward SDE with fine Euler–Maruyama reproduces N(alpha x0, sigma^2)."""
    sde = D.vp()
    n, steps, t_end = 4000, 400, 0.6
    x0 = jnp.full((n, 1), 2.0)

    def body(x, inp):
        k, t = inp
        dt = t_end / steps
        return x + sde.drift(x, t) * dt + jnp.sqrt(sde.g2(t) * dt) * jax.random.normal(k, x.shape), None

    ts = jnp.arange(steps) * (t_end / steps)
    x, _ = jax.jit(lambda k: jax.lax.scan(body, x0, (jax.random.split(k, steps), ts)))(jax.random.key(0))
    mean, std = sde.marginal(x0[:1], t_end)
    assert abs(float(x.mean()) - float(mean[0, 0])) < 4 * float(std) / np.sqrt(n) + 0.01
    assert abs(float(x.std()) - float(std)) < 4 * float(std) / np.sqrt(2 * n) + 0.01


def test_reverse_and_ode_drift_relation():
    sde = D.subvp()
    score = lambda x, t: -x  # noqa: E731
    x = jnp.ones((3, 2))
    rev, ode = sde.reverse_drift(score, x, 0.4), sde.ode_drift(score, x, 0.4)
    np.testing.assert_allclose(rev - ode, -0.5 * sde.g2(0.4) * score(x, 0.4), rtol=1e-6)


def test_prior_log_prob_and_bad_arguments():
    sde = D.ve(sigma_max=3.0)
    x = jnp.array([[0.5, -1.0]])
    expected = jax.scipy.stats.norm.logpdf(x, scale=3.0).sum()
    np.testing.assert_allclose(sde.prior_log_prob(x), [expected], rtol=1e-6)
    with pytest.raises(ValueError, match="sigma_max"):
        D.ve(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="beta_min"):
        D.vp(beta_min=-1.0)
    with pytest.raises(ValueError, match="t_max"):
        D.vp_cosine(t_max=1.0)

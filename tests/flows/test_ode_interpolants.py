"""Interpolants, ODE/SDE kernels and CNF likelihood against closed forms.

Ground truth: for x0 ~ N(0, I) and x1 a Gaussian mixture, every interpolant's marginal
p_t is a Gaussian mixture, so its velocity and score are known exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

import probgen as pg
from tests.flows.mixture2d import MEANS, STDS, WEIGHTS, mixture_log_prob, mixture_samples, projected_ks


def exact_fields(interp):
    """Exact velocity and score of p_t for x0 ~ N(0, I), x1 ~ mixture."""

    def parts(t, x):
        a, b, g = interp.alpha(t), interp.beta(t), interp.gamma(t)
        da, db, dg = (jax.grad(f)(t) for f in interp)
        m = b * MEANS
        v = a**2 + g**2 + b**2 * STDS**2  # (K,)
        logw = jnp.log(WEIGHTS) + jax.scipy.stats.norm.logpdf(x[None, :], m, jnp.sqrt(v)[:, None]).sum(-1)
        w = jax.nn.softmax(logw)
        resid = (x[None, :] - m) / v[:, None]
        vel = db * MEANS + (da * a + db * b * STDS[:, None] ** 2 + dg * g) * resid
        return w, vel, -resid

    velocity = lambda t, x: jnp.sum(parts(t, x)[0][:, None] * parts(t, x)[1], 0)  # noqa: E731
    score = lambda t, x: jnp.sum(parts(t, x)[0][:, None] * parts(t, x)[2], 0)  # noqa: E731
    return velocity, score


@pytest.mark.parametrize("interp_name", ["linear", "trig"])
def test_exact_velocity_ode_transports_and_cnf_matches_density(interp_name):
    interp = pg.flows.linear_interpolant() if interp_name == "linear" else pg.flows.trig_interpolant()
    velocity, _ = exact_fields(interp)
    x0 = jax.random.normal(jax.random.key(0), (600, 2))
    x1 = jax.jit(jax.vmap(lambda x: pg.dynamics.solve_ode(velocity, x, num_steps=40)))(x0)
    assert projected_ks(x1, mixture_samples(jax.random.key(1), 600)) > 0.01
    # CNF log-likelihood through the exact velocity equals the mixture density.
    pts = mixture_samples(jax.random.key(2), 8)
    base = lambda z: jax.scipy.stats.norm.logpdf(z).sum()  # noqa: E731
    lp = jax.jit(jax.vmap(lambda x: pg.dynamics.cnf_log_prob(velocity, x, base, num_steps=40)))(pts)
    np.testing.assert_allclose(lp, jax.vmap(mixture_log_prob)(pts), atol=2e-2)


def test_hutchinson_cnf_is_unbiased():
    velocity, _ = exact_fields(pg.flows.linear_interpolant())
    base = lambda z: jax.scipy.stats.norm.logpdf(z).sum()  # noqa: E731
    x = jnp.array([0.5, 0.2])
    exact = pg.dynamics.cnf_log_prob(velocity, x, base, num_steps=20)
    keys = jax.random.split(jax.random.key(3), 400)
    hutch = jax.jit(jax.vmap(lambda k: pg.dynamics.cnf_log_prob(velocity, x, base, 20, divergence="hutchinson", key=k)))(keys)
    se = float(jnp.std(hutch)) / np.sqrt(hutch.size)
    assert abs(float(jnp.mean(hutch)) - float(exact)) < 4 * se + 1e-4
    assert float(jnp.std(hutch)) > 0  # it is a genuine estimator
    with pytest.raises(ValueError, match="key"):
        pg.dynamics.cnf_log_prob(velocity, x, base, divergence="hutchinson")


def test_sde_with_exact_fields_samples_mixture():
    interp = pg.flows.noisy_interpolant(1.0)
    velocity, score = exact_fields(interp)
    # The interpolant SDE with noise eps = 0.5: drift b + eps s, diffusion sqrt(2 eps).
    kernel = pg.dynamics.sde_integrator(lambda t, x: velocity(t, x) + 0.5 * score(t, x), np.sqrt(2 * 0.5),
                                        t0=0.0, t1=1.0, num_steps=200)
    keys = jax.random.split(jax.random.key(4), 600)
    x0 = jax.random.normal(jax.random.key(5), (600, 2))
    x1 = jax.jit(jax.vmap(lambda k, x: pg.run(kernel, k, kernel.init(x), 200)[0].x))(keys, x0)
    assert projected_ks(x1, mixture_samples(jax.random.key(6), 600)) > 0.01


@pytest.mark.parametrize("noisy", [False, True])
def test_losses_are_minimized_by_exact_fields(noisy):
    # The conditional expectation makes the residual orthogonal to any function of x_t:
    # d/dc loss(v + c g) at c = 0 vanishes (within 4 se), and is far from 0 for a wrong v.
    # Each replicate draws its own (x0, x1) batch as well as (t, z): with one batch shared by all
    # replicates their spread misses the batch's own fluctuation and the "se" is too small.
    interp = pg.flows.noisy_interpolant(1.0) if noisy else pg.flows.linear_interpolant()
    velocity, score = exact_fields(interp)
    n = 4000

    def pairs(key):
        return jax.random.normal(jax.random.fold_in(key, 7), (n, 2)), mixture_samples(jax.random.fold_in(key, 8), n)

    g = lambda t, x: jnp.tanh(x) * (1 + t)  # noqa: E731
    fields = [("velocity", velocity, pg.flows.velocity_loss)] + ([("score", score, pg.flows.score_loss)] if noisy else [])
    for name, field, loss in fields:
        def per_batch(c, key, f=field, lossf=loss, scale=1.0):
            x0, x1 = pairs(key)
            return lossf(lambda t, x: scale * f(t, x) + c * g(t, x), key, x0, x1, interp)

        keys = jax.random.split(jax.random.key(9), 20)
        grads = jax.vmap(lambda k: jax.grad(per_batch)(0.0, k))(keys)
        se = float(jnp.std(grads)) / np.sqrt(grads.size)
        assert abs(float(jnp.mean(grads))) < 4 * se + 1e-3, name
        wrong = jax.vmap(lambda k: jax.grad(per_batch)(0.0, k, scale=0.8))(keys)
        assert abs(float(jnp.mean(wrong))) > 4 * float(jnp.std(wrong)) / np.sqrt(20), name


@pytest.mark.parametrize("n", [2, 7, 32])
def test_auction_assignment_is_optimal(n):
    rng = np.random.default_rng(n)
    cost = rng.random((n, n)).astype(np.float32)
    perm = np.asarray(jax.jit(pg.flows.assignment)(jnp.asarray(cost)))
    assert sorted(perm.tolist()) == list(range(n))
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    best = cost[rows, cols].sum()
    assert cost[np.arange(n), perm].sum() <= best + 1e-4 * (cost.max() - cost.min()) + 1e-5


def test_ot_coupling_and_sinkhorn():
    # A 4 x 4 grid of unit spacing: the identity pairing beats any other by a cost of >= 2 against
    # a regularization of 0.01 x mean cost = 0.05, so the entropic plan is a permutation to
    # within exp(-40) whatever the float dtype (random points could lie arbitrarily close).
    x0 = jnp.stack(jnp.meshgrid(jnp.arange(4.0), jnp.arange(4.0)), -1).reshape(16, 2)
    x0 = x0[jax.random.permutation(jax.random.key(10), 16)]
    x1 = x0[::-1] + 0.01
    a, b = pg.flows.ot_coupling(x0, x1)
    np.testing.assert_allclose(b, x0 + 0.01, atol=1e-6)  # the identity pairing is optimal
    cost = jnp.sum((x0[:, None] - x1[None]) ** 2, -1)
    plan = pg.flows.sinkhorn_plan(cost, reg=0.05, num_iters=300)
    np.testing.assert_allclose(plan.sum(0), 1 / 16, atol=1e-4)
    np.testing.assert_allclose(plan.sum(1), 1 / 16, atol=1e-3)
    _, bs = pg.flows.ot_coupling(x0, x1, "sinkhorn", key=jax.random.key(0), reg=0.01)
    assert bool(jnp.all(jnp.abs(bs - (x0 + 0.01)) < 1e-5))
    with pytest.raises(ValueError, match="key"):
        pg.flows.ot_coupling(x0, x1, "sinkhorn")
    with pytest.raises(ValueError, match="shape"):
        pg.flows.ot_coupling(x0, x1[:3])


def test_float64_interpolant_losses_keep_float64():
    with jax.enable_x64(True):
        x0, x1 = jnp.zeros((4, 2)), jnp.ones((4, 2))
        loss = pg.flows.velocity_loss(lambda t, x: jnp.ones(2), jax.random.key(0), x0, x1,
                                      pg.flows.noisy_interpolant())
        assert loss.dtype == jnp.float64

"""The ODE and Euler–Maruyama steps against closed forms: orders of convergence, OU moments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg

ORDERS = {"euler": 1, "heun": 2, "rk4": 4}


def _solve(method, num_steps):
    """dx/dt = cos(t) x on [0, 2] from x = 1: x(2) = exp(sin 2), with a time-dependent field."""
    return pg.dynamics.solve_ode(lambda t, x: jnp.cos(t) * x, jnp.ones((), jnp.float64), 0.0, 2.0, num_steps, method)


@pytest.mark.parametrize("method", pg.dynamics.METHODS)
def test_order_of_convergence(method):
    """Halving the step divides the error by 2^order (within 25%)."""
    with jax.enable_x64(True):
        exact = np.exp(np.sin(2.0))
        errors = [abs(float(_solve(method, n)) - exact) for n in (16, 32, 64)]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    expected = 2.0 ** ORDERS[method]
    assert all(0.75 * expected < r < 1.25 * expected for r in ratios), (method, errors, ratios)


def test_ode_methods_orders():
    # dx/dt = x on [0, 1]: error of Euler ~ h, Heun ~ h^2, RK4 ~ h^4.
    errs = {}
    for method in pg.dynamics.METHODS:
        x1 = pg.dynamics.solve_ode(lambda t, x: x, jnp.ones(()), num_steps=10, method=method)
        errs[method] = abs(float(x1) - np.e)
    assert 0.05 < errs["euler"] < 0.15
    assert 1e-3 < errs["heun"] < 1e-2
    assert errs["rk4"] < 1e-5
    with pytest.raises(ValueError, match="method"):
        pg.dynamics.ode_integrator(lambda t, x: x, method="rk45")
    with pytest.raises(pg.SettingError, match="ode_step: method"):
        pg.dynamics.ode_step(lambda t, x: x, 0.0, jnp.ones(()), 0.1, "midpoint")


def test_ode_step_on_a_pytree_keeps_each_leafs_dtype():
    """A float64 field on a float32 leaf keeps the leaf float32; the structure is kept."""
    with jax.enable_x64(True):
        x = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones((), jnp.float64)}
        out = pg.dynamics.ode_step(lambda t, x: jax.tree.map(lambda u: -u.astype(jnp.float64), x), 0.0, x,
                                   jnp.float64(0.1), "rk4")
        assert out["a"].dtype == jnp.float32 and out["b"].dtype == jnp.float64
        h = 0.1  # one RK4 step of dx/dt = -x multiplies x by the degree-4 Taylor polynomial of exp(-h)
        assert abs(float(out["b"]) - (1 - h + h**2 / 2 - h**3 / 6 + h**4 / 24)) < 1e-15


def test_euler_maruyama_weak_convergence_on_ornstein_uhlenbeck():
    """dx = -theta x dt + s dW from x0: mean x0 e^{-theta T}, variance s^2 (1 - e^{-2 theta T}) / (2 theta).

    The Euler–Maruyama bias at 1,000 steps (O(h), from the exact discrete recursion) is far below
    the standard error of 20,000 paths, so the moments must match within 4 standard errors.
    """
    theta, s, x0, horizon, num_steps, n = 1.5, 0.8, 2.0, 1.0, 1000, 20000
    kernel = pg.dynamics.sde_integrator(lambda t, x: -theta * x, s, 0.0, horizon, num_steps)
    final, _ = jax.jit(lambda k: pg.run(kernel, k, kernel.init(jnp.full((n,), x0)), num_steps))(jax.random.key(0))
    mean = x0 * np.exp(-theta * horizon)
    var = s**2 * (1 - np.exp(-2 * theta * horizon)) / (2 * theta)
    h = horizon / num_steps
    em_mean = x0 * (1 - theta * h) ** num_steps
    em_var = s**2 * h * (1 - (1 - theta * h) ** (2 * num_steps)) / (1 - (1 - theta * h) ** 2)
    se_mean, se_var = np.sqrt(var / n), var * np.sqrt(2.0 / n)
    assert abs(em_mean - mean) < 0.25 * se_mean and abs(em_var - var) < 0.25 * se_var  # bias is negligible
    x = np.asarray(final.x, np.float64)
    assert abs(x.mean() - mean) < 4 * se_mean, (x.mean(), mean, se_mean)
    assert abs(x.var() - var) < 4 * se_var, (x.var(), var, se_var)
    assert float(final.t) == horizon


def test_euler_maruyama_step_noise_scale_and_dtype():
    """With zero drift one step is N(x, diffusion^2 |dt|), also for dt < 0; xi is drawn in x's dtype."""
    n, dt = 40000, -0.25
    keys = jax.random.split(jax.random.key(1), n)
    step = jax.vmap(lambda k: pg.dynamics.euler_maruyama_step(k, lambda t, x: 0 * x, lambda t: 2.0 + t, 1.0,
                                                              jnp.ones(()), dt))
    x = np.asarray(step(keys))
    var = 3.0**2 * abs(dt)
    assert abs(x.mean() - 1.0) < 4 * np.sqrt(var / n)
    assert abs(x.var() - var) < 4 * var * np.sqrt(2.0 / n)
    with jax.enable_x64(True):
        for dtype in (jnp.float32, jnp.float64):
            out = pg.dynamics.euler_maruyama_step(jax.random.key(0), lambda t, x: x, 1.0, 0.0, jnp.ones(3, dtype), 0.1)
            assert out.dtype == dtype

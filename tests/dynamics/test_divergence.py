"""The one divergence estimator: exact against the Jacobian trace, Hutchinson unbiased."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg

W = jax.random.normal(jax.random.key(0), (6, 6)) / 2.0


def field(x):
    """A nonlinear field on one point of any shape with 6 entries."""
    flat = x.reshape(-1)
    return (jnp.tanh(W @ flat) + flat**2 * jnp.sin(flat)).reshape(x.shape)


def trace(x):
    flat = x.reshape(-1)
    return jnp.trace(jax.jacfwd(lambda y: field(y.reshape(x.shape)).reshape(-1))(flat))


@pytest.mark.parametrize("shape", [(6,), (2, 3)])
def test_exact_divergence_is_the_jacobian_trace(shape):
    x = jax.random.normal(jax.random.key(1), shape)
    value, div = pg.dynamics.divergence(field, x)
    np.testing.assert_allclose(value, field(x), rtol=1e-6)
    np.testing.assert_allclose(div, trace(x), rtol=1e-5, atol=1e-5)
    # a batch of independent rows: one divergence per row, with D JVPs for the whole batch
    rows = jax.random.normal(jax.random.key(2), (5,) + shape)
    values, divs = jax.jit(lambda r: pg.dynamics.divergence(jax.vmap(field), r, batched=True))(rows)
    assert divs.shape == (5,)
    np.testing.assert_allclose(values, jax.vmap(field)(rows), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(divs, jax.vmap(trace)(rows), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
@pytest.mark.parametrize("batched", [False, True])
def test_hutchinson_is_unbiased(probe, batched):
    x = jax.random.normal(jax.random.key(3), (3, 6) if batched else (6,))
    f = jax.vmap(field) if batched else field
    exact = jax.vmap(trace)(x) if batched else trace(x)
    estimate = jax.jit(jax.vmap(lambda k: pg.dynamics.divergence(f, x, "hutchinson", k, num_probes=2, probe=probe,
                                                                 batched=batched)[1]))
    draws = estimate(jax.random.split(jax.random.key(4), 4000))
    mean, se = draws.mean(0), draws.std(0) / np.sqrt(draws.shape[0])
    assert np.all(np.abs(mean - exact) < 4 * se), (mean, exact, se)
    assert np.all(draws.std(0) > 1e-3)  # a genuine estimator, not the exact trace


def test_divergence_errors_name_the_argument():
    x = jnp.ones(3)
    with pytest.raises(pg.SettingError, match="divergence: .*key"):
        pg.dynamics.divergence(lambda y: y, x, "hutchinson")
    with pytest.raises(pg.SettingError, match="divergence must be one of"):
        pg.dynamics.divergence(lambda y: y, x, "trace")
    with pytest.raises(pg.SettingError, match="probe must be one of"):
        pg.dynamics.divergence(lambda y: y, x, "hutchinson", jax.random.key(0), probe="sphere")
    with pytest.raises(pg.SettingError, match="num_probes"):
        pg.dynamics.divergence(lambda y: y, x, "hutchinson", jax.random.key(0), num_probes=0)
    with pytest.raises(pg.SettingError, match="f\\(x\\) must have x's shape"):
        pg.dynamics.divergence(lambda y: y[:2], x)


def test_divergence_keeps_float64():
    with jax.enable_x64(True):
        x = jnp.linspace(0.1, 0.6, 6, dtype=jnp.float64)
        _, div = pg.dynamics.divergence(field, x)
        assert div.dtype == jnp.float64
        np.testing.assert_allclose(div, trace(x), rtol=1e-12)

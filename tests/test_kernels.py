"""The kernel protocol and its scan driver."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg


def ar1(rho):
    def step(key, x):
        x = rho * x + jax.random.normal(key)
        return x, {"x": x}

    return pg.Kernel(init=jnp.asarray, step=step)


def test_run_all_matches_manual_loop():
    kernel = ar1(0.5)
    key = jax.random.key(0)
    final, (states, infos) = jax.jit(lambda k: pg.run(kernel, k, kernel.init(1.0), 7, keep="all"))(key)
    x = 1.0
    for t, k in enumerate(jax.random.split(key, 7)):
        x, _ = kernel.step(k, x)
        assert float(states[t]) == pytest.approx(float(x), rel=1e-6)
    assert float(final) == pytest.approx(float(x), rel=1e-6)
    assert np.allclose(infos["x"], states)


def test_run_last_equals_all_final_and_stores_nothing_per_step():
    kernel = ar1(0.9)
    key = jax.random.key(1)
    final_all, (states, _) = pg.run(kernel, key, kernel.init(0.0), 50, keep="all")
    final_last, last_info = pg.run(kernel, key, kernel.init(0.0), 50, keep="last")
    assert float(final_all) == float(final_last) == float(last_info["x"])
    out = jax.eval_shape(lambda k: pg.run(kernel, k, kernel.init(0.0), 1000, keep="last"), key)
    assert all(leaf.shape == () for leaf in jax.tree.leaves(out))


def test_stationary_variance_of_ar1():
    # AR(1) with rho=0.5 has stationary variance 1 / (1 - rho^2); vmap over chains.
    kernel = ar1(0.5)
    keys = jax.random.split(jax.random.key(2), 4000)
    finals, _ = jax.vmap(lambda k: pg.run(kernel, k, kernel.init(0.0), 30))(keys)
    var = float(jnp.var(finals))
    target = 1 / (1 - 0.25)
    # se of a sample variance of a Gaussian: var * sqrt(2 / n)
    assert abs(var - target) < 4 * target * np.sqrt(2 / 4000)


def test_bad_arguments():
    kernel = ar1(0.5)
    with pytest.raises(ValueError, match="num_steps"):
        pg.run(kernel, jax.random.key(0), 0.0, 0)
    with pytest.raises(ValueError, match="keep"):
        pg.run(kernel, jax.random.key(0), 0.0, 3, keep="every")

"""Shared small problems for the train tests (module-level so compiled chunks are reused)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

NUM_EXAMPLES = 64


def make_regression_data(seed: int = 0, num_examples: int = NUM_EXAMPLES):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, 3)).astype(np.float32)
    w_true = np.array([1.5, -2.0, 0.5], np.float32)
    y = (x @ w_true + 0.3 + 0.1 * rng.normal(size=num_examples)).astype(np.float32)
    return {"x": jnp.asarray(x), "y": jnp.asarray(y)}


def regression_loss(params, key, batch):
    """Mean squared error plus a key-dependent jitter, so PRNG handling shows in the result."""
    prediction = batch["x"] @ params["w"] + params["b"]
    jitter = 1e-3 * jax.random.normal(key)
    loss = jnp.mean((prediction - batch["y"]) ** 2) + jitter * params["b"]
    return loss, {"w_norm": jnp.linalg.norm(params["w"])}


def init_params():
    return {"w": jnp.zeros(3, jnp.float32), "b": jnp.zeros((), jnp.float32)}


ADAM = optax.adam(0.05)


@pytest.fixture(scope="session")
def data():
    return make_regression_data()


def _as_numpy(leaf):
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(leaf))
    return np.asarray(leaf)


def assert_trees_bitwise_equal(a, b):
    """Every leaf equal bit for bit (PRNG keys compared by their key data)."""
    leaves_a, def_a = jax.tree.flatten(a)
    leaves_b, def_b = jax.tree.flatten(b)
    assert def_a == def_b
    for x, y in zip(leaves_a, leaves_b):
        x, y = _as_numpy(x), _as_numpy(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()

"""Modules as parameters: an equinox Module and a flax nnx Module go straight into pg.fit,
pg.train.resume and pg.sweep (their non-array leaves ride along), and into a guide."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probgen as pg

eqx = pytest.importorskip("equinox")
nnx = pytest.importorskip("flax.nnx")

# Least squares with a closed-form optimum: y = x @ w_true + b_true exactly.
X = jax.random.normal(jax.random.key(0), (64, 3))
W_TRUE = jnp.array([[1.0], [-2.0], [0.5]])
Y = X @ W_TRUE + 0.3


def _eqx_linear():
    return eqx.nn.Linear(3, 1, key=jax.random.key(1))


def _nnx_linear():
    return nnx.Linear(3, 1, rngs=nnx.Rngs(1))


def _eqx_mlp():
    # Holds functions (the activations) among its leaves: jnp.asarray of those fails.
    return eqx.nn.MLP(3, 1, 8, 1, key=jax.random.key(2))


def _loss(model, key, batch):
    del key
    pred = jax.vmap(model)(batch["x"])
    return jnp.mean((pred - batch["y"]) ** 2)


@pytest.mark.parametrize("make", [_eqx_linear, _nnx_linear], ids=["equinox", "nnx"])
def test_fit_reaches_least_squares_solution(make):
    result = pg.fit(_loss, make(), optax.adam(0.05), jax.random.key(0), data={"x": X, "y": Y},
                    steps=600, progress=False)
    model = result.params
    assert type(model) is type(make())
    pred = jax.vmap(model)(X)
    np.testing.assert_allclose(pred, Y, atol=2e-3)


def test_module_with_function_leaves_trains_and_keeps_them():
    mlp = _eqx_mlp()
    result = pg.fit(_loss, mlp, optax.adam(0.01), jax.random.key(0), data={"x": X, "y": Y},
                    steps=200, progress=False)
    assert result.params.activation is mlp.activation
    assert float(result.history["loss"][-1]) < 0.2 * float(result.history["loss"][0])


def test_resume_module_is_bit_identical(tmp_path):
    opt = optax.adam(0.01)
    data = {"x": X, "y": Y}
    full = pg.fit(_loss, _eqx_mlp(), opt, jax.random.key(3), data=data, steps=20, batch_size=16,
                  progress=False)
    pg.fit(_loss, _eqx_mlp(), opt, jax.random.key(3), data=data, steps=10, batch_size=16,
           checkpoint_dir=tmp_path / "run", progress=False)
    rest = pg.train.resume(_loss, _eqx_mlp(), opt, tmp_path / "run", data=data, steps=20, batch_size=16,
                           progress=False)
    for a, b in zip(jax.tree.leaves(eqx.filter(full.params, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(rest.params, eqx.is_array))):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(full.history["loss"], rest.history["loss"])


def test_sweep_over_module_members():
    def train(learning_rate):
        opt = optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
        return pg.fit(_loss, _eqx_mlp(), opt, jax.random.key(0), data={"x": X, "y": Y}, steps=30)

    result = pg.sweep(train, learning_rate=[0.0, 0.05])
    member = result.member((0,))
    # Learning rate 0 leaves the initial module exactly as it was.
    for a, b in zip(jax.tree.leaves(eqx.filter(member.params, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(_eqx_mlp(), eqx.is_array))):
        np.testing.assert_array_equal(a, b)
    assert member.params.activation is _eqx_mlp().activation
    losses = pg.train.metric_values(result, "loss")
    assert losses[1] < losses[0]

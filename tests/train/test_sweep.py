import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probgen as pg
from probgen.train import SweepAxisError

from .conftest import init_params, regression_loss

LEARNING_RATES = [0.001, 0.003, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3]
TRACES = {"n": 0}


def train(learning_rate, seed, data):
    TRACES["n"] += 1
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)
    return pg.train.fit(regression_loss, init_params(), optimizer, jax.random.key(seed), data=data,
                        steps=40, batch_size=16)


def test_sweep_8_learning_rates_by_2_seeds_equals_each_run_alone(data):
    TRACES["n"] = 0
    result = pg.train.sweep(lambda learning_rate, seed: train(learning_rate, seed, data),
                            learning_rate=LEARNING_RATES, seed=[0, 1])
    assert TRACES["n"] == 3  # init, one chunk length, finish: each traced once for all 16 runs
    assert result.grid_shape == (8, 2)
    assert result.results.params["w"].shape == (8, 2, 3)
    assert result.results.history["loss"].shape == (8, 2, 40)
    alone = jax.jit(lambda lr, seed: train(lr, seed, data))
    for i, lr in enumerate(LEARNING_RATES):
        for j, seed in enumerate([0, 1]):
            single = alone(jnp.float32(lr), jnp.int32(seed))
            member = result.member((i, j))
            for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(member.params)):
                np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
            np.testing.assert_allclose(single.history["loss"], member.history["loss"], rtol=2e-5, atol=1e-6)
    assert result.config((2, 1)) == {"learning_rate": 0.01, "seed": 1}


def quadratic(params, key, batch):
    return jnp.sum((params - 3.0) ** 2)


def test_best_and_tabulate_against_closed_form():
    # SGD on (p-3)^2 from 0: final loss 9 (1 - 2 lr)^(2 n); best is lr closest to 0.5.
    def run(learning_rate, beta):
        optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
        out = pg.train.fit(lambda p, k, b: beta * quadratic(p, k, b), jnp.zeros(()), optimizer,
                           jax.random.key(0), steps=5)
        return {"final": quadratic(out.params, None, None), "params": out.params}

    lrs = np.array([0.05, 0.1, 0.2, 0.3])
    result = pg.train.sweep(run, learning_rate=lrs, beta=[0.5, 1.0])
    expected = 9.0 * (1.0 - 2.0 * lrs[:, None] * np.array([0.5, 1.0])[None]) ** 10
    np.testing.assert_allclose(pg.train.metric_values(result, "final"), expected, rtol=1e-4)
    config, member = pg.train.best(result, "final")
    assert config == {"learning_rate": 0.3, "beta": 1.0}
    np.testing.assert_allclose(member["final"], expected[3, 1], rtol=1e-4)
    assert pg.train.best(result, "final", mode="max")[0] == {"learning_rate": 0.05, "beta": 0.5}
    table = pg.train.tabulate(result, "final")
    lines = table.splitlines()
    assert lines[0].split() == ["learning_rate", "beta", "final"]
    assert len(lines) == 9 and lines[-1].split()[:2] == ["0.3", "1"]


def test_best_skips_diverged_members():
    def run(learning_rate):
        optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
        return pg.train.fit(lambda p, k, b: jnp.exp(p ** 2) * 0 + p ** 4, jnp.ones(()) * 2.0, optimizer,
                            jax.random.key(0), steps=30)

    result = pg.train.sweep(run, learning_rate=[0.01, 1e6])
    losses = pg.train.metric_values(result, "loss")
    assert np.isfinite(losses[0]) and not np.isfinite(losses[1])
    assert pg.train.best(result)[0] == {"learning_rate": 0.01}


def test_shape_setting_int_axis_explains_to_loop():
    def run(num_particles):
        return jnp.mean(jax.random.normal(jax.random.key(0), (num_particles,)))

    with pytest.raises(SweepAxisError, match=r"integer axes \['num_particles'\].*Loop over"):
        pg.train.sweep(run, num_particles=[10, 100])


def test_bad_axes():
    with pytest.raises(ValueError, match="at least one axis"):
        pg.train.sweep(lambda: 0.0)
    with pytest.raises(ValueError, match="'beta' must be a non-empty 1-D"):
        pg.train.sweep(lambda beta: beta, beta=[[1.0, 2.0]])
    with pytest.raises(SweepAxisError, match="'name' must hold numbers"):
        pg.train.sweep(lambda name: 0.0, name=["adam", "sgd"])

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probgen as pg
from probgen.core.errors import SettingError
from probgen.train import NonFiniteLossError

from .conftest import ADAM, NUM_EXAMPLES, assert_trees_bitwise_equal, init_params, regression_loss


def quadratic(params, key, batch):
    return jnp.sum((params - 3.0) ** 2)


SGD = optax.sgd(0.1)


def test_sgd_on_quadratic_matches_closed_form():
    # p_{n+1} = p_n - lr * 2 (p_n - 3)  =>  p_n = 3 + (1 - 2 lr)^n (p_0 - 3)
    p0 = jnp.array([0.0, 1.0, 5.0])
    result = pg.train.fit(quadratic, p0, SGD, jax.random.key(0), steps=20, chunk_size=7, progress=False)
    expected = 3.0 + 0.8 ** 20 * (np.array([0.0, 1.0, 5.0]) - 3.0)
    np.testing.assert_allclose(result.params, expected, rtol=1e-5)
    losses = np.sum((3.0 + 0.8 ** np.arange(20)[:, None] * (np.array([0.0, 1.0, 5.0]) - 3.0) - 3.0) ** 2, -1)
    np.testing.assert_allclose(result.history["loss"], losses, rtol=1e-4)
    assert int(result.step) == 20


def test_minibatch_regression_reaches_least_squares(data):
    result = pg.train.fit(regression_loss, init_params(), ADAM, jax.random.key(1), data=data,
                          steps=600, batch_size=16, chunk_size=200, progress=False)
    design = np.concatenate([np.asarray(data["x"]), np.ones((NUM_EXAMPLES, 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, np.asarray(data["y"]), rcond=None)
    np.testing.assert_allclose(result.params["w"], solution[:3], atol=0.03)
    np.testing.assert_allclose(result.params["b"], solution[3], atol=0.03)
    assert set(result.history) == {"loss", "w_norm"}
    assert result.history["w_norm"].shape == (600,)
    np.testing.assert_allclose(result.history["w_norm"][-1], np.linalg.norm(result.params["w"]), rtol=0.02)


@pytest.mark.parametrize("batching", ["epoch", "random"])
def test_chunking_does_not_change_a_bit(data, batching):
    runs = [
        pg.train.fit(regression_loss, init_params(), ADAM, jax.random.key(2), data=data, steps=30,
                     batch_size=12, batching=batching, chunk_size=chunk, progress=False)
        for chunk in (30, 7)
    ]
    assert_trees_bitwise_equal(runs[0], runs[1])


def test_epoch_batching_visits_every_example_once_per_epoch():
    # The loss reports the sum of the example ids in its batch; an epoch of 4 steps of
    # 16 (remainder dropped from 70) must cover 64 distinct ids.
    ids = {"id": jnp.arange(70, dtype=jnp.float32)}

    def loss(params, key, batch):
        return jnp.sum(params ** 2), {"ids": jnp.sum(batch["id"]), "distinct": jnp.unique(batch["id"], size=16).size * 1.0}

    spec = pg.train.batch_spec(ids, 16)
    seen = [np.asarray(pg.train.batch_indices(jax.random.key(3), s, spec)) for s in range(8)]
    for epoch in (seen[:4], seen[4:]):
        joined = np.concatenate(epoch)
        assert len(set(joined.tolist())) == 64
    assert not np.array_equal(np.concatenate(seen[:4]), np.concatenate(seen[4:]))
    # fit picks the same batches as batch_indices with the run's data key.
    result = pg.train.fit(loss, jnp.ones(()), SGD, jax.random.key(3), data=ids, steps=8, batch_size=16,
                          chunk_size=3, progress=False)
    data_key = jax.random.fold_in(jax.random.key(3), 1)
    expected = [float(np.sum(pg.train.batch_indices(data_key, s, spec))) for s in range(8)]
    np.testing.assert_allclose(result.history["ids"], expected)


def test_fit_under_jit_and_vmap_matches_eager():
    p0 = jnp.array([0.5, -1.0])
    eager = pg.train.fit(quadratic, p0, SGD, jax.random.key(0), steps=15, progress=False)
    traced = jax.jit(lambda p: pg.train.fit(quadratic, p, SGD, jax.random.key(0), steps=15))(p0)
    np.testing.assert_allclose(traced.params, eager.params, rtol=1e-6)
    batched = jax.vmap(lambda p: pg.train.optimize(quadratic, p, SGD, jax.random.key(0), steps=15))(
        jnp.stack([p0, p0 + 1.0])
    )
    np.testing.assert_allclose(batched.params[0], eager.params, rtol=1e-6)
    assert batched.history["loss"].shape == (2, 15)


def _nan_at_seven(params, key, batch):
    # SGD with lr 1 on -p moves p to exactly n at step n; the loss is NaN from p = 7 on.
    return -params + jnp.where(params >= 7.0, jnp.nan, 0.0)


def test_nan_loss_stops_with_step_last_loss_and_good_state():
    with pytest.raises(NonFiniteLossError) as info:
        pg.train.fit(_nan_at_seven, jnp.zeros(()), optax.sgd(1.0), jax.random.key(0), steps=20,
                     chunk_size=5, progress=False)
    err = info.value
    assert err.step == 7
    assert err.last_finite_loss == -6.0
    assert "step 7" in str(err) and "-6.0" in str(err)
    assert float(err.result.params) == 7.0 and int(err.result.step) == 7
    np.testing.assert_array_equal(err.result.history["loss"], -np.arange(7.0))


def test_nan_gradient_is_reported():
    def loss(params, key, batch):  # finite loss, NaN gradient at p = 0
        return jnp.sqrt(jnp.abs(params)) * 0.0 + params

    with pytest.raises(NonFiniteLossError, match="gradient became non-finite at step 0"):
        pg.train.fit(loss, jnp.zeros(()), SGD, jax.random.key(0), steps=3, progress=False)


def test_nan_in_traced_fit_freezes_state():
    result = jax.jit(lambda p: pg.train.optimize(_nan_at_seven, p, optax.sgd(1.0), jax.random.key(0), steps=12))(
        jnp.zeros(())
    )
    assert float(result.params) == 7.0 and int(result.step) == 7
    assert np.all(np.isnan(result.history["loss"][7:]))


def test_progress_silent_when_not_interactive(capsys, monkeypatch):
    monkeypatch.setenv("CI", "1")
    assert not pg.train.is_interactive()
    pg.train.fit(quadratic, jnp.zeros(()), SGD, jax.random.key(0), steps=10, chunk_size=5)
    assert capsys.readouterr().err == ""
    pg.train.fit(quadratic, jnp.zeros(()), SGD, jax.random.key(0), steps=10, chunk_size=5, progress=False)
    assert capsys.readouterr().err == ""
    pg.train.fit(quadratic, jnp.zeros(()), SGD, jax.random.key(0), steps=10, chunk_size=5, progress=True)
    err = capsys.readouterr().err
    assert "10/10" in err and "loss=" in err


def test_bad_inputs_have_clear_errors(data):
    with pytest.raises(SettingError, match="batch_size=100 is larger than the data set"):
        pg.train.fit(regression_loss, init_params(), ADAM, jax.random.key(0), data=data, steps=2, batch_size=100)
    with pytest.raises(SettingError, match="disagree on the number of examples"):
        pg.train.fit(regression_loss, init_params(), ADAM, jax.random.key(0),
                     data={"x": data["x"], "y": data["y"][:10]}, steps=2, batch_size=4)
    with pytest.raises(TypeError, match="scalar loss"):
        pg.train.fit(lambda p, k, b: p * 2.0, jnp.zeros(3), SGD, jax.random.key(0), steps=2, progress=False)
    with pytest.raises(SettingError, match="steps must be a positive int"):
        pg.train.fit(quadratic, jnp.zeros(()), SGD, jax.random.key(0), steps=0)
    with pytest.raises(SettingError, match="batching must be one of"):
        pg.train.fit(quadratic, jnp.zeros(()), SGD, jax.random.key(0), steps=2, batching="cyclic")
    with pytest.raises(SettingError, match="checkpoint_every was given without checkpoint_dir"):
        pg.train.fit(quadratic, jnp.zeros(()), SGD, jax.random.key(0), steps=2, checkpoint_every=1)


@pytest.mark.parametrize(
    "name, value",
    [("steps", 10.0), ("steps", True), ("chunk_size", np.int64(0)), ("batch_size", 4.0),
     ("checkpoint_every", -1), ("max_to_keep", np.float64(2.0))],
)
def test_bad_counts_name_the_argument(data, tmp_path, name, value):
    settings = {**dict(steps=10, data=data, checkpoint_dir=tmp_path, progress=False), name: value}
    with pytest.raises(SettingError, match=rf"(fit|batch_spec): {name} must be a positive int"):
        pg.train.fit(regression_loss, init_params(), ADAM, jax.random.key(0), **settings)
    assert not any(tmp_path.iterdir())  # refused before a checkpoint was written


def test_numpy_integer_settings_are_accepted(data, tmp_path):
    # Counts often come out of numpy (np.int64(100) from an array or a config grid).
    as_python = dict(steps=24, batch_size=8, chunk_size=7)
    plain = pg.train.fit(regression_loss, init_params(), ADAM, jax.random.key(4), data=data, progress=False,
                         **as_python)
    numpy_ints = {k: np.int64(v) for k, v in as_python.items()}
    first = pg.train.fit(regression_loss, init_params(), ADAM, jax.random.key(4), data=data, progress=False,
                         checkpoint_dir=tmp_path, checkpoint_every=np.int64(12), max_to_keep=np.int32(5),
                         **{**numpy_ints, "steps": np.int64(12)})
    assert int(first.step) == 12
    resumed = pg.train.resume(regression_loss, init_params(), ADAM, tmp_path, data=data, progress=False,
                              step=np.int64(12), **numpy_ints)
    assert_trees_bitwise_equal(resumed, plain)
    pure = pg.train.optimize(regression_loss, init_params(), ADAM, jax.random.key(4), data=data,
                             steps=np.int64(24), batch_size=np.int64(8))
    assert_trees_bitwise_equal(pure.params, plain.params)

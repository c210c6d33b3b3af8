"""Sweeps run as fits: chunks, progress, checkpoints and resume, diverged members, vector metrics."""

import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probgen as pg
from probgen.core.errors import SettingError
from probgen.train import CheckpointMismatchError, NonFiniteLossError

from .conftest import assert_trees_bitwise_equal, init_params, make_regression_data, regression_loss

sweep_module = sys.modules["probgen.train.sweep"]  # ``probgen.train.sweep`` is the function

# orbax leaves tensorstore futures behind; harmless here (as in test_checkpoint.py).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

DATA = make_regression_data()
STEPS = 30
LEARNING_RATES = [0.02, 0.05, 2.0]  # adam's first step moves each weight by ~lr: 2.0 leaves |w| < 3
SEEDS = [0, 1]
GRID = dict(learning_rate=LEARNING_RATES, seed=SEEDS)


def barrier_loss(params, key, batch):
    """The regression loss plus a barrier that is finite only inside |w| < 3 (NaN outside).

    The least-squares weights have norm 2.55; a huge first step leaves the ball and the
    next loss is NaN, in float32 and float64 alike. ``w`` is a vector metric.
    """
    loss, metrics = regression_loss(params, key, batch)
    barrier = -1e-3 * jnp.log(9.0 - jnp.sum(params["w"] ** 2))
    return loss + barrier, {**metrics, "w": params["w"]}


def make_train(init_scale):
    def train(learning_rate, seed):
        optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)
        params = {"w": init_scale * jax.random.normal(jax.random.key(seed), (3,)), "b": jnp.zeros(())}
        return pg.train.fit(barrier_loss, params, optimizer, jax.random.key(seed), data=DATA, steps=STEPS,
                            batch_size=16)

    return train


train = make_train(0.1)


def train_twice(learning_rate, seed):
    first = train(learning_rate, seed)
    optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
    return pg.train.fit(barrier_loss, first.params, optimizer, jax.random.key(seed), data=DATA, steps=5,
                        batch_size=16)


def train_under_jit(learning_rate, seed):
    return jax.jit(train)(learning_rate, seed)


def _sweep(**settings):
    return pg.train.sweep(train, chunk_size=10, progress=False, **{**GRID, **settings})


@pytest.fixture(scope="module")
def uninterrupted():
    with pytest.warns(RuntimeWarning, match=r"2 of 6 members diverged.*learning_rate=2, seed=0 at step"):
        return _sweep()


def test_chunked_sweep_equals_the_single_scan_sweep(uninterrupted):
    # The sweep before chunking: the whole train_fn vmapped over the grid in one program.
    lrs, seeds = np.meshgrid(LEARNING_RATES, SEEDS, indexing="ij")
    config = {"learning_rate": jnp.asarray(lrs.ravel()), "seed": jnp.asarray(seeds.ravel())}
    single_scan = jax.jit(jax.vmap(lambda c: train(**c)))(config)
    single_scan = jax.tree.map(lambda leaf: leaf.reshape((3, 2) + leaf.shape[1:]), single_scan)
    assert_trees_bitwise_equal(uninterrupted.results, single_scan)
    assert uninterrupted.results.history["w"].shape == (3, 2, STEPS, 3)
    assert uninterrupted.results.history["loss"].shape == (3, 2, STEPS)


def test_diverged_members_are_frozen_and_reported(uninterrupted):
    result = uninterrupted
    np.testing.assert_array_equal(result.diverged, [[False, False], [False, False], [True, True]])
    assert (result.first_bad_step[:2] == -1).all()
    losses = np.asarray(result.results.history["loss"])
    assert np.isfinite(losses[:2]).all()
    # The others trained on (minibatch losses: compare means over 5 steps).
    assert (losses[1, :, -5:].mean(-1) < 0.5 * losses[1, :, :5].mean(-1)).all()
    # A diverged member is frozen where fit alone stops: the step fit names, the state entering it.
    with pytest.raises(NonFiniteLossError) as info:
        pg.train.fit(barrier_loss, {"w": 0.1 * jax.random.normal(jax.random.key(1), (3,)), "b": jnp.zeros(())},
                     optax.inject_hyperparams(optax.adam)(learning_rate=2.0), jax.random.key(1), data=DATA,
                     steps=STEPS, batch_size=16, progress=False)
    frozen = result.member((2, 1))
    assert result.first_bad_step[2, 1] == info.value.step == int(frozen.step)
    for a, b in zip(jax.tree.leaves(frozen.params), jax.tree.leaves(info.value.result.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.isfinite(losses[2, 1, info.value.step:]).any()
    np.testing.assert_allclose(losses[2, 1, :info.value.step], info.value.result.history["loss"], rtol=1e-5)
    # NaN losses never win.
    assert pg.train.best(result)[0]["learning_rate"] in (0.02, 0.05)


def _interrupt_chunk(monkeypatch, at_call):
    """Ctrl-C during the ``at_call``-th chunk of the next sweep."""
    real = sweep_module._compiled_members
    calls = {"n": 0}

    def programs(*parts):
        compiled = real(*parts)

        def chunk(*args):
            calls["n"] += 1
            if calls["n"] == at_call:
                raise KeyboardInterrupt
            return compiled.chunk(*args)

        return compiled._replace(chunk=chunk)

    monkeypatch.setattr(sweep_module, "_compiled_members", programs)


def test_interrupted_sweep_resumes_bit_for_bit(tmp_path, monkeypatch, uninterrupted):
    _interrupt_chunk(monkeypatch, at_call=3)  # during steps 20..29
    with pytest.raises(KeyboardInterrupt):
        _sweep(checkpoint_dir=tmp_path, checkpoint_every=STEPS)
    monkeypatch.undo()
    assert pg.train.latest_step(tmp_path) == 20  # the last completed chunk was saved
    with pytest.warns(RuntimeWarning, match="2 of 6 members diverged"):
        resumed = pg.train.resume_sweep(train, tmp_path, chunk_size=10, progress=False, **GRID)
    assert_trees_bitwise_equal(resumed.results, uninterrupted.results)  # params, opt_state, history, step, key
    np.testing.assert_array_equal(resumed.first_bad_step, uninterrupted.first_bad_step)
    assert pg.train.latest_step(tmp_path) == STEPS
    # A finished sweep resumes to the same result without training.
    with pytest.warns(RuntimeWarning):
        again = pg.train.resume_sweep(train, tmp_path, chunk_size=10, progress=False, **GRID)
    assert_trees_bitwise_equal(again.results, uninterrupted.results)


def test_checkpoint_holds_the_stacked_members(tmp_path, uninterrupted):
    with pytest.warns(RuntimeWarning):
        _sweep(checkpoint_dir=tmp_path, checkpoint_every=20, max_to_keep=None)
    assert pg.train.latest_step(tmp_path) == STEPS
    expected = uninterrupted.results
    members = jax.tree.map(lambda x: x.reshape((6,) + x.shape[2:]), (expected.params, expected.opt_state))
    state, history = pg.train.restore_checkpoint(tmp_path, *members, step=20, member_shape=(6,))
    np.testing.assert_array_equal(history["w"], np.asarray(expected.history["w"]).reshape(6, STEPS, 3)[:, :20])
    frozen = np.minimum(np.asarray(expected.step[2]), 20)
    np.testing.assert_array_equal(state.step, [20, 20, 20, 20, *frozen])
    assert_trees_bitwise_equal(state.key, jax.vmap(jax.random.key)(jnp.asarray([0, 1] * 3)))
    # The sweep's checkpoints are not a fit's, and the other way round.
    with pytest.raises(CheckpointMismatchError, match="kind: saved 'sweep', now 'fit'"):
        pg.train.resume(barrier_loss, init_params(), optax.adam(0.05), tmp_path, data=DATA, steps=STEPS,
                        batch_size=16, progress=False)


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(learning_rate=[0.02, 0.05, 3.0], seed=SEEDS), "axes: saved"),  # other values
        (dict(learning_rate=[0.02, 0.05], seed=SEEDS), "axes: saved"),  # another grid size
        (dict(seed=SEEDS, learning_rate=LEARNING_RATES), "axes: saved"),  # the axes in another order
        (dict(train_fn=make_train(0.2)), "train_fn: saved"),  # the same code, another constant
    ],
)
def test_resume_refuses_another_sweep(tmp_path, change, named, monkeypatch):
    with pytest.warns(RuntimeWarning):
        _sweep(checkpoint_dir=tmp_path)
    monkeypatch.setattr(sweep_module, "_drive_chunks", _no_training)
    change = dict(change)
    train_fn = change.pop("train_fn", train)
    axes = change or GRID
    with pytest.raises(CheckpointMismatchError, match=named):
        pg.train.resume_sweep(train_fn, tmp_path, chunk_size=10, progress=False, **axes)


def _no_training(*args, **kwargs):
    raise AssertionError("a chunk ran before the checkpoint was checked")


def test_fit_checkpoint_is_not_a_sweep(tmp_path, monkeypatch):
    pg.train.fit(regression_loss, init_params(), optax.adam(0.05), jax.random.key(0), data=DATA, steps=5,
                 checkpoint_dir=tmp_path, progress=False)
    monkeypatch.setattr(sweep_module, "_drive_chunks", _no_training)
    with pytest.raises(CheckpointMismatchError, match="kind: saved 'fit', now 'sweep'"):
        pg.train.resume_sweep(train, tmp_path, chunk_size=10, progress=False, **GRID)


def test_used_folder_and_fits_that_cannot_be_chunked_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_module, "_drive_chunks", _no_training)
    with pytest.raises(SettingError, match=r"exactly once, directly; it called it 2 time\(s\)"):
        pg.train.sweep(train_twice, checkpoint_dir=tmp_path / "twice", **GRID)
    with pytest.raises(SettingError, match=r"called it 2 time\(s\)"):
        pg.train.sweep(train_twice, progress=True, **GRID)
    with pytest.raises(SettingError, match=r"0 time\(s\) directly and 1 time\(s\) under a jit"):
        pg.train.sweep(train_under_jit, checkpoint_dir=tmp_path / "jit", **GRID)
    with pytest.raises(SettingError, match="checkpoint_every was given without checkpoint_dir"):
        pg.train.sweep(train, checkpoint_every=10, **GRID)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("")
    with pytest.raises(SettingError, match=r"is not empty.*pg.train.resume_sweep"):
        pg.train.sweep(train, checkpoint_dir=tmp_path / "used", **GRID)
    assert not (tmp_path / "twice").exists() and not (tmp_path / "jit").exists()


# --- vector metrics, on a quadratic with a closed form ------------------------------------------

P0 = np.array([0.0, 1.0, 5.0])


def quadratic(params, key, batch):
    return jnp.sum((params - 3.0) ** 2), {"p": params, "grad": 2.0 * (params - 3.0)}


def train_quadratic(learning_rate):
    optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
    return pg.train.fit(quadratic, jnp.asarray(P0, jnp.float32), optimizer, jax.random.key(0), steps=12)


def _closed_form(learning_rate, steps):
    # SGD on (p-3)^2: p_n = 3 + (1 - 2 lr)^n (p_0 - 3), recorded entering step n.
    return 3.0 + (1.0 - 2.0 * learning_rate) ** np.arange(steps)[:, None] * (P0 - 3.0)


def test_vector_metrics_in_fit_history_and_through_resume(tmp_path):
    settings = dict(chunk_size=5, progress=False)
    full = pg.train.fit(quadratic, jnp.asarray(P0, jnp.float32), optax.sgd(0.1), jax.random.key(0), steps=12,
                        **settings)
    assert full.history["p"].shape == (12, 3) and full.history["grad"].shape == (12, 3)
    np.testing.assert_allclose(full.history["p"], _closed_form(0.1, 12), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(full.history["grad"], 2.0 * (_closed_form(0.1, 12) - 3.0), rtol=1e-5, atol=1e-5)
    pg.train.fit(quadratic, jnp.asarray(P0, jnp.float32), optax.sgd(0.1), jax.random.key(0), steps=6,
                 checkpoint_dir=tmp_path, **settings)
    resumed = pg.train.resume(quadratic, jnp.asarray(P0, jnp.float32), optax.sgd(0.1), tmp_path, steps=12,
                              **settings)
    assert_trees_bitwise_equal(resumed, full)


def test_vector_metrics_in_a_sweep_need_a_reduction(capsys):
    learning_rates = np.array([0.05, 0.1, 0.2])
    result = pg.train.sweep(train_quadratic, learning_rate=learning_rates, chunk_size=5, progress=True)
    err = capsys.readouterr().err
    # One bar over the 12 steps of the fit, advancing per chunk to the total.
    assert len(re.findall(r"\| 0/12 ", err)) == 1 and "12/12" in err and "best_loss=" in err
    assert "5/12" in err and "10/12" in err
    history = result.results.history["p"]
    assert history.shape == (3, 12, 3)
    for i, lr in enumerate(learning_rates):
        np.testing.assert_allclose(history[i], _closed_form(lr, 12), rtol=1e-5, atol=1e-5)
    with pytest.raises(SettingError, match=r"'p' has shape \(3,\) per member.*\[\.\.\., -1, 0\]"):
        pg.train.metric_values(result, "p")
    with pytest.raises(SettingError, match="vector-valued"):
        pg.train.best(result, "grad")
    with pytest.raises(SettingError, match="vector-valued"):
        pg.train.tabulate(result, "p")
    last_first = pg.train.metric_values(result, lambda r: r.history["p"][..., -1, 0])
    np.testing.assert_allclose(last_first, [_closed_form(lr, 12)[-1, 0] for lr in learning_rates], rtol=1e-5)
    assert pg.train.best(result)[0] == {"learning_rate": 0.2}


def test_progress_is_silent_in_ci(capsys, monkeypatch):
    monkeypatch.setenv("CI", "1")
    pg.train.sweep(train_quadratic, learning_rate=[0.05, 0.1, 0.2], chunk_size=5)
    assert capsys.readouterr().err == ""


def train_quadratic_twice(learning_rate):
    first = train_quadratic(learning_rate)
    optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
    return pg.train.fit(quadratic, first.params, optimizer, jax.random.key(1), steps=5)


def test_two_fits_without_checkpoints_run_as_one_program():
    learning_rates = np.array([0.05, 0.1])
    result = pg.train.sweep(train_quadratic_twice, learning_rate=learning_rates)
    assert result.first_bad_step is None and result.diverged is None
    assert result.results.history["p"].shape == (2, 5, 3)
    for i, lr in enumerate(learning_rates):  # 12 then 5 SGD steps: p_17 in closed form
        np.testing.assert_allclose(result.results.params[i], _closed_form(lr, 18)[-1], rtol=1e-5)

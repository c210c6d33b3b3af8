"""The replay buffer: first in first out with wraparound, sampling only filled slots (uniform
and prioritized), under jit and lax.scan, as a plain pytree, with clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg
from tests.gfn.common import GRID_GFN, GRID_PARAMS


def test_add_wraps_around_and_sampling_reads_filled_slots_only():
    buffer = pg.gfn.replay_buffer({"x": jnp.zeros((2, 3)), "i": jnp.zeros(2, jnp.int32)}, capacity=5)
    add = jax.jit(pg.gfn.replay_add)
    batches = [{"x": jnp.full((2, 3), float(k)), "i": jnp.array([2 * k, 2 * k + 1], jnp.int32)} for k in range(4)]
    buffer = add(buffer, batches[0])
    assert int(buffer.size) == 2 and int(buffer.position) == 2
    drawn = jax.jit(pg.gfn.replay_sample, static_argnums=2)(buffer, jax.random.key(0), 200)
    assert set(np.asarray(drawn["i"]).tolist()) == {0, 1}                    # never an empty slot
    for batch in batches[1:]:
        buffer = add(buffer, batch)
    # 8 items into 5 slots: items 5, 6, 7 overwrote 0, 1, 2 (oldest first).
    assert np.asarray(buffer.items["i"]).tolist() == [5, 6, 7, 3, 4]
    assert int(buffer.size) == 5 and int(buffer.position) == 3
    np.testing.assert_array_equal(buffer.items["x"][:, 0], [2.0, 3.0, 3.0, 1.0, 2.0])
    drawn = pg.gfn.replay_sample(buffer, jax.random.key(1), 5000)["i"]
    counts = np.bincount(np.asarray(drawn), minlength=8)[[3, 4, 5, 6, 7]]
    assert np.all(np.abs(counts / 5000 - 0.2) < 4 * np.sqrt(0.2 * 0.8 / 5000))


def test_prioritized_sampling_follows_the_weights():
    buffer = pg.gfn.replay_add(pg.gfn.replay_buffer(jnp.zeros(1, jnp.int32), 6), jnp.arange(3, dtype=jnp.int32))
    log_weights = jnp.log(jnp.array([1.0, 2.0, 5.0, 100.0, 100.0, 100.0]))   # the empty slots are skipped
    drawn = np.asarray(pg.gfn.replay_sample(buffer, jax.random.key(2), 8000, log_weights))
    p = np.array([1.0, 2.0, 5.0]) / 8.0
    freq = np.bincount(drawn, minlength=3) / drawn.size
    assert freq.size == 3 and np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / drawn.size))


def test_the_buffer_runs_in_a_scan_and_is_a_pytree_of_trajectories():
    gfn, params = GRID_GFN, GRID_PARAMS
    example = jax.eval_shape(lambda k: pg.gfn.sample_trajectories(gfn, params, k, 32), jax.random.key(0))
    buffer = pg.gfn.replay_buffer(example, 80)

    def body(buffer, key):
        batch = pg.gfn.sample_trajectories(gfn, params, key, 32)
        return pg.gfn.replay_add(buffer, batch), batch.length

    buffer, lengths = jax.lax.scan(body, buffer, jax.random.split(jax.random.key(1), 3))
    assert isinstance(buffer.items, pg.gfn.Trajectories) and int(buffer.size) == 80 and int(buffer.position) == 16
    # Items 0..95 into 80 slots: slot k holds the latest item i with i % 80 == k.
    items = np.asarray(lengths).reshape(-1)
    np.testing.assert_array_equal(buffer.items.length, items[np.r_[80:96, 16:80]])
    leaves, treedef = jax.tree.flatten(buffer)
    assert jax.tree.unflatten(treedef, leaves).capacity == 80


def test_errors():
    buffer = pg.gfn.replay_buffer({"x": jnp.zeros((1, 2))}, 3)
    with pytest.raises(pg.SettingError, match="do not fit"):
        pg.gfn.replay_add(buffer, {"x": jnp.zeros((4, 2))})
    with pytest.raises(pg.ArgumentError, match="do not match"):
        pg.gfn.replay_add(buffer, {"x": jnp.zeros((1, 3))})
    with pytest.raises(pg.ArgumentError, match="log_weights"):
        pg.gfn.replay_sample(buffer, jax.random.key(0), 2, jnp.zeros(2))
    with pytest.raises(pg.ValidationError, match="empty"):
        pg.validate(lambda k: pg.gfn.replay_sample(buffer, k, 2))(jax.random.key(0))
    with pytest.raises(pg.SettingError, match="capacity"):
        pg.gfn.replay_buffer({"x": jnp.zeros((1, 2))}, 0)

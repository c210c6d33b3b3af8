"""Trajectory batches: backward samples reversed into forward order are valid trajectories that
end at the given states; per-step log probabilities vanish after the end; bad batches are refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg

from tests.gfn.common import GRID as ENV
from tests.gfn.common import GRID_GFN as GFN
from tests.gfn.common import GRID_PARAMS as PARAMS


def _equal(a, b):
    return jnp.all(a["position"] == b["position"]) & (a["stopped"] == b["stopped"])


def test_backward_samples_are_forward_trajectories_ending_at_the_given_states():
    cells = jnp.array([[3, 3], [0, 0], [2, 1], [0, 3], [1, 2], [3, 3]], jnp.int32)
    x = {"position": cells, "stopped": jnp.ones(6, bool)}
    batch = pg.gfn.sample_backward_trajectories(GFN, PARAMS, jax.random.key(2), x)
    assert batch.num_trajectories == 6
    np.testing.assert_array_equal(batch.length, cells.sum(1) + 1)            # increments, then exit
    np.testing.assert_array_equal(batch.final_states["position"], cells)
    assert batch.condition is None
    np.testing.assert_allclose(batch.log_reward, jax.vmap(ENV.log_reward)(x), rtol=1e-6)
    assert not np.asarray(batch.states["position"][:, 0]).any()               # all start at s_0
    live = np.arange(ENV.max_steps)[None] < np.asarray(batch.length)[:, None]

    @jax.jit
    def edges(batch):
        before = jax.tree.map(lambda a: a[:, :-1], batch.states)
        after = jax.tree.map(lambda a: a[:, 1:], batch.states)
        forward_ok = jax.vmap(jax.vmap(lambda s, a, t: _equal(ENV.step(s, jnp.minimum(a, 2)), t)))(
            before, batch.actions, after)
        backward_ok = jax.vmap(jax.vmap(lambda t, b, s: _equal(ENV.backward_step(t, jnp.minimum(b, 2)), s)))(
            after, batch.backward_actions, before)
        return forward_ok, backward_ok

    forward_ok, backward_ok = edges(batch)
    assert np.all(np.asarray(forward_ok)[live]) and np.all(np.asarray(backward_ok)[live])
    assert np.all(np.asarray(batch.actions)[~live] == ENV.num_actions)
    log_pf, log_pb = pg.gfn.trajectory_log_probs(GFN, PARAMS, batch)
    assert np.all(np.asarray(log_pf)[~live] == 0) and np.all(np.asarray(log_pb)[~live] == 0)
    assert np.all(np.asarray(log_pf)[live] <= 0) and np.isfinite(np.asarray(log_pf)).all()
    # Two identical terminal states may get different trajectories (a DAG), never invalid ones.
    assert np.isfinite(np.asarray(log_pb).sum(1)).all()


def test_bad_inputs_are_refused():
    with pytest.raises(pg.ArgumentError, match="batch of states shaped like the initial state"):
        pg.gfn.sample_backward_trajectories(GFN, PARAMS, jax.random.key(0), ENV.initial_state)
    with pytest.raises(pg.ArgumentError, match="shaped like the initial state"):
        pg.gfn.sample_backward_trajectories(GFN, PARAMS, jax.random.key(0), {"position": jnp.zeros((2, 3), jnp.int32),
                                                                             "stopped": jnp.ones(2, bool)})
    batch = pg.gfn.sample_trajectories(GFN, PARAMS, jax.random.key(0), 32)
    with pytest.raises(pg.ArgumentError, match="max_steps=7"):
        pg.gfn.trajectory_log_probs(GFN, PARAMS, batch._replace(actions=batch.actions[:, :3]))
    with pytest.raises(pg.ArgumentError, match="'backward'"):
        pg.gfn.trajectory_log_probs(GFN, {"forward": PARAMS["forward"]}, batch)
    with pytest.raises(pg.ValidationError, match="not terminal"):
        start = jax.tree.map(lambda a: a[None], ENV.initial_state)
        pg.validate(lambda k: pg.gfn.sample_backward_trajectories(GFN, PARAMS, k, start).length)(jax.random.key(0))

"""Off-policy GFlowNet training as a kernel: parameters, optimizer state and replay buffer in one state.

On-policy training needs nothing here: every objective of :mod:`probgen.gfn.objectives`
draws its own trajectories when ``batch`` is None, so ``pg.fit(loss, params, optimizer,
key, steps=...)`` trains it (with checkpoints, sweeps, progress). Off-policy training with a
replay buffer carries more state than ``pg.fit`` does; :func:`gflownet_trainer` builds a
:class:`probgen.Kernel` whose state holds ``(params, opt_state, buffer, step)``: each
step draws fresh exploring trajectories, adds them to the buffer, trains on them together
with trajectories replayed from the buffer, and reports the loss. ``pg.run`` drives it in
one ``lax.scan`` (in chunks, by calling it again on the returned state); the state is a
pytree, so it checkpoints with orbax and ``jax.vmap`` batches whole runs.

    trainer = pg.gfn.gflownet_trainer(loss, gfn, optax.adam(1e-3), num_trajectories=16,
                                      epsilon=0.05, buffer_capacity=1000, num_replayed=16)
    state = trainer.init(params)
    state, (_, info) = pg.run(trainer, key, state, 1000, keep=lambda s: None)
    info.loss            # one loss per step
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from probgen.core.checks import static_int
from probgen.core.errors import ArgumentError, SettingError
from probgen.gfn.policies import GFlowNet, check_exploration, check_gflownet
from probgen.gfn.replay import ReplayBuffer, replay_add, replay_buffer, replay_sample
from probgen.gfn.trajectories import sample_trajectories
from probgen.kernels import Kernel


class GFlowNetTrainState(NamedTuple):
    """The state of :func:`gflownet_trainer`: what training carries from step to step.

    Attributes:
      params: the GFlowNet parameters.
      opt_state: the optax optimizer state.
      buffer: the :class:`~probgen.gfn.replay.ReplayBuffer` of trajectories (None without replay).
      step: int32, steps taken.
    """

    params: Any
    opt_state: Any
    buffer: ReplayBuffer | None
    step: jax.Array


class GFlowNetTrainInfo(NamedTuple):
    """What one training step reports.

    Attributes:
      loss: the loss of the step's batch (fresh and replayed trajectories).
      mean_log_reward: the mean log reward of the step's fresh trajectories.
    """

    loss: jax.Array
    mean_log_reward: jax.Array


def gflownet_trainer(
    loss_fn: Callable[..., jax.Array],
    gfn: GFlowNet,
    optimizer: optax.GradientTransformation,
    *,
    num_trajectories: int = 64,
    epsilon: Any = 0.0,
    temperature: Any = 1.0,
    condition_sampler: Callable[[jax.Array], Any] | None = None,
    buffer_capacity: int = 0,
    num_replayed: int = 0,
    prioritized: bool = False,
) -> Kernel:
    """A kernel that trains a GFlowNet off-policy: explore, store in a replay buffer, replay, update.

    Each ``step(key, state)`` draws ``num_trajectories`` trajectories from the current
    forward policy explored with ``epsilon`` / ``temperature`` (parameters held fixed for
    the draw), adds them to the buffer, appends ``num_replayed`` trajectories drawn from
    the buffer (uniformly, or in proportion to ``R`` with ``prioritized``), and takes one
    optimizer step on ``loss_fn(params, key, batch)`` with that batch.

    Args:
      loss_fn: an objective of :mod:`probgen.gfn.objectives` (anything taking
        ``(params, key, Trajectories)``); its on-policy settings are not used.
      gfn: the :class:`~probgen.gfn.policies.GFlowNet`.
      optimizer: an optax optimizer.
      num_trajectories: fresh trajectories per step.
      epsilon, temperature: exploration of the fresh trajectories.
      condition_sampler: ``key -> condition`` for each fresh trajectory, or None.
      buffer_capacity: replay buffer slots (0: no buffer).
      num_replayed: replayed trajectories per step (needs a buffer).
      prioritized: replay in proportion to the stored reward instead of uniformly.

    Returns:
      A :class:`probgen.Kernel`: ``init(params) -> GFlowNetTrainState``,
      ``step(key, state) -> (state, GFlowNetTrainInfo)``.

    Raises:
      SettingError: bad counts, replay without a buffer, or bad exploration settings.

    Example:
        >>> import jax, optax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [16])
        >>> trainer = pg.gfn.gflownet_trainer(pg.gfn.trajectory_balance(gfn), gfn, optax.adam(0.01),
        ...     num_trajectories=8, epsilon=0.1, buffer_capacity=64, num_replayed=8)
        >>> state, (_, info) = pg.run(trainer, jax.random.key(1), trainer.init(params), 20, keep=lambda s: None)
        >>> info.loss.shape, int(state.buffer.size), int(state.step)
        ((20,), 64, 20)
    """
    where = "gflownet_trainer"
    check_gflownet(gfn, where)
    num_trajectories = static_int(num_trajectories, "num_trajectories", where)
    buffer_capacity = static_int(buffer_capacity, "buffer_capacity", where, minimum=0)
    num_replayed = static_int(num_replayed, "num_replayed", where, minimum=0)
    check_exploration(epsilon, temperature, where)
    if num_replayed and not buffer_capacity:
        raise SettingError(f"{where}: num_replayed={num_replayed} needs a replay buffer (buffer_capacity > 0)")
    if buffer_capacity and buffer_capacity < num_trajectories:
        raise SettingError(f"{where}: buffer_capacity={buffer_capacity} is smaller than the "
                           f"num_trajectories={num_trajectories} added each step")

    def draw(params, key):
        condition_key, sample_key = jax.random.split(key)
        condition = None
        if condition_sampler is not None:
            condition = jax.vmap(condition_sampler)(jax.random.split(condition_key, num_trajectories))
        return sample_trajectories(gfn, params, sample_key, num_trajectories, condition=condition,
                                   epsilon=epsilon, temperature=temperature)

    def init(params: Any) -> GFlowNetTrainState:
        for path, leaf in jax.tree_util.tree_leaves_with_path(params):
            if not hasattr(leaf, "dtype") and not isinstance(leaf, (int, float)):
                raise ArgumentError(
                    f"{where}: params{jax.tree_util.keystr(path)} is a {type(leaf).__name__}, not an array; the "
                    "trainer carries params through lax.scan (use dicts of arrays or flax nnx modules, or pg.fit "
                    "for on-policy training of modules with non-array leaves)")
        # Concrete dtypes: a weakly typed Python float would change type in the first update.
        params = jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), params)
        buffer = None
        if buffer_capacity:
            example = jax.eval_shape(draw, params, jax.random.key(0))
            buffer = replay_buffer(example, buffer_capacity)
        return GFlowNetTrainState(params, optimizer.init(params), buffer, jnp.zeros((), jnp.int32))

    def step(key: jax.Array, state: GFlowNetTrainState) -> tuple[GFlowNetTrainState, GFlowNetTrainInfo]:
        draw_key, replay_key, loss_key = jax.random.split(key, 3)
        fresh = draw(jax.lax.stop_gradient(state.params), draw_key)
        batch, buffer = fresh, state.buffer
        if buffer is not None:
            buffer = replay_add(buffer, fresh)
            if num_replayed:
                log_weights = jnp.nan_to_num(buffer.items.log_reward, nan=-jnp.inf) if prioritized else None
                replayed = replay_sample(buffer, replay_key, num_replayed, log_weights)
                batch = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), fresh, replayed)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, loss_key, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        info = GFlowNetTrainInfo(loss, jnp.mean(fresh.log_reward))
        return GFlowNetTrainState(params, opt_state, buffer, state.step + 1), info

    return Kernel(init, step)

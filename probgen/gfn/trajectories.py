"""Batches of trajectories: sampling them forward or backward, and their per-step log probabilities.

A :class:`Trajectories` batch is what the objectives train on and what a replay buffer
stores: states ``s_0 .. s_T`` (``T = max_steps``; after the end the terminal state
repeats), the forward and backward actions of each step (no-ops after the end), the
length, the log reward of the final state and the condition. It is built from the traces
of :func:`~probgen.gfn.policies.forward_policy` (:func:`sample_trajectories`) or of
:func:`~probgen.gfn.policies.backward_policy` (:func:`sample_backward_trajectories`,
reversed into forward order), or by hand for off-policy data.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.compiled import compiled_call
from probgen.core.errors import ArgumentError
from probgen.gfn.envs import ById, Environment, State
from probgen.gfn.policies import (
    GFlowNet,
    backward_action_log_probs,
    backward_policy,
    check_condition_size,
    check_exploration,
    forward_action_log_probs,
    forward_policy,
    no_exploration,
    param_entry,
)
from probgen.core.keys import particle_keys


class Trajectories(NamedTuple):
    """A batch of complete (or, for forward-looking DB, partial) trajectories; leading axis: the batch.

    Attributes:
      states: the states ``s_0 .. s_T`` (``T = env.max_steps``): each leaf has shape
        ``(batch, T + 1, *leaf_shape)``; after a trajectory ends, its terminal state repeats.
      actions: int32 ``(batch, T)``, the forward action of each step; ``env.num_actions``
        (the no-op) after the end.
      backward_actions: int32 ``(batch, T)``, the backward action at ``s_{t+1}`` leading
        back to ``s_t``; ``env.num_backward_actions`` after the end.
      log_reward: ``(batch,)`` ``log R`` of the final state (NaN if it is not terminal),
        untempered; objectives apply the reward exponent.
      length: int32 ``(batch,)``, the number of steps before the end.
      condition: the condition each trajectory was drawn under (leading axis ``batch``),
        or None.

    Example:
        >>> import jax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [8])
        >>> batch = pg.gfn.sample_trajectories(gfn, params, jax.random.key(1), 5)
        >>> batch.actions.shape, batch.states["position"].shape, batch.final_states["stopped"].all().item()
        ((5, 7), (5, 8, 2), True)
    """

    states: State
    actions: jax.Array
    backward_actions: jax.Array
    log_reward: jax.Array
    length: jax.Array
    condition: Any = None

    @property
    def final_states(self) -> State:
        """The last state of each trajectory (its terminal state when complete)."""
        return jax.tree.map(lambda x: x[:, -1], self.states)

    @property
    def num_trajectories(self) -> int:
        """The batch size (static)."""
        return self.actions.shape[0]


def _policy_params(gfn: GFlowNet, params: Any, *roles: str, where: str) -> dict:
    """The entries of ``params`` the policies of ``roles`` read (so that programs do not depend on the others)."""
    needed = [r for r in roles if r == "forward" or (r == "backward" and gfn.backward_logits is not None)]
    return {name: param_entry(params, name, where) for name in needed}


def _complete(env: Environment, states: State, actions: jax.Array, condition: Any) -> Trajectories:
    """A batch from its states ``(B, T+1, ...)`` and forward actions ``(B, T)``."""
    noop = actions == env.num_actions
    before = jax.tree.map(lambda x: x[:, :-1], states)
    safe = jnp.minimum(actions, env.num_actions - 1)
    backward = jax.vmap(jax.vmap(env.backward_action))(before, safe).astype(jnp.int32)
    backward = jnp.where(noop, env.num_backward_actions, backward)
    final = jax.tree.map(lambda x: x[:, -1], states)
    terminal = jax.vmap(env.is_terminal)(final)
    log_reward = jax.vmap(env.log_reward)(final)
    log_reward = jnp.where(terminal, log_reward, jnp.nan)
    length = jnp.sum(~noop, axis=-1).astype(jnp.int32)
    return Trajectories(states, actions.astype(jnp.int32), backward, log_reward, length, condition)


def sample_trajectories(
    gfn: GFlowNet,
    params: Any,
    key: jax.Array,
    num_trajectories: int,
    *,
    condition: Any = None,
    epsilon: Any = 0.0,
    temperature: Any = 1.0,
) -> Trajectories:
    """Draw ``num_trajectories`` trajectories from the forward policy (one vmapped ``simulate``).

    Args:
      gfn: the :class:`~probgen.gfn.policies.GFlowNet`.
      params: its parameters.
      key: PRNG key.
      num_trajectories: the batch size (static).
      condition: None, or one condition per trajectory (leading axis ``num_trajectories``).
      epsilon: probability of a uniformly random valid action at each step (exploration).
      temperature: divides the logits (``> 1`` flattens the policy).

    Returns:
      A :class:`Trajectories` batch.

    Raises:
      ArgumentError: the condition has no leading axis of ``num_trajectories``.
      SettingError: ``epsilon`` outside ``[0, 1]`` or a non-positive ``temperature``.

    Example:
        >>> import jax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [8])
        >>> batch = jax.jit(lambda k: pg.gfn.sample_trajectories(gfn, params, k, 100))(jax.random.key(1))
        >>> bool((batch.length >= 1).all() and (batch.length <= env.max_steps).all())
        True
    """
    num = static_int(num_trajectories, "num_trajectories", "sample_trajectories")
    check_condition_size(condition, num, "sample_trajectories")
    check_exploration(epsilon, temperature, "sample_trajectories")
    # A Python 0 / 1 stays a static "no exploration" (compiled_call would trace a float).
    epsilon = None if no_exploration(epsilon, 0) else epsilon
    temperature = None if no_exploration(temperature, 1) else temperature
    policy_params = _policy_params(gfn, params, "forward", where="sample_trajectories")
    return compiled_call(_forward_sampler, (ById(gfn), num), policy_params, key, condition, epsilon, temperature)


def _forward_sampler(holder: ById, num: int):
    gfn = holder.value
    env = gfn.env
    policy = forward_policy(gfn)

    def run(params, key, condition, epsilon, temperature):
        keys = particle_keys(key, num)
        traces = jax.vmap(lambda k, c: policy.simulate(k, params, c, epsilon, temperature))(keys, condition)
        initial = jax.tree.map(lambda x: jnp.broadcast_to(x, (num, 1) + jnp.shape(x)), env.initial_state)
        states = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=1), initial, traces.retval)
        return _complete(env, states, traces["steps", "action"], condition)

    return run


def sample_backward_trajectories(
    gfn: GFlowNet,
    params: Any,
    key: jax.Array,
    terminal_states: State,
    *,
    condition: Any = None,
) -> Trajectories:
    """Trajectories ending at given terminal states, drawn backward with ``P_B`` and put in forward order.

    One trajectory per terminal state (leading axis of ``terminal_states``): walk back to
    ``s_0`` with the backward policy, then reverse. Use it to train on known terminal
    objects (e.g. from data or a replay buffer of objects), and to estimate ``log P_T(x)``
    by importance sampling over the trajectories that end at ``x``.

    Args:
      gfn: the :class:`~probgen.gfn.policies.GFlowNet`.
      params: its parameters (``"backward"`` is read when the backward policy is learned).
      key: PRNG key.
      terminal_states: a batch of terminal states (leading axis: the batch).
      condition: None, or one condition per state.

    Returns:
      A :class:`Trajectories` batch whose final states are ``terminal_states``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [8])
        >>> x = {"position": jnp.array([[2, 1], [0, 0]], jnp.int32), "stopped": jnp.ones(2, bool)}
        >>> batch = pg.gfn.sample_backward_trajectories(gfn, params, jax.random.key(1), x)
        >>> batch.length.tolist(), batch.states["position"][0, 0].tolist()
        ([4, 1], [0, 0])
    """
    env = gfn.env
    leaves = jax.tree.leaves(terminal_states)
    if not leaves or jnp.ndim(leaves[0]) == 0:
        raise ArgumentError("sample_backward_trajectories: terminal_states needs a leading batch axis")
    num = jnp.shape(leaves[0])[0]
    initial_leaves = jax.tree.leaves(env.initial_state)
    if jax.tree.structure(terminal_states) != jax.tree.structure(env.initial_state) or any(
            jnp.shape(a)[1:] != jnp.shape(b) for a, b in zip(leaves, initial_leaves)):
        raise ArgumentError("sample_backward_trajectories: terminal_states must be a batch of states shaped like "
                            f"the initial state, got {jax.tree.map(jnp.shape, terminal_states)}")
    check_condition_size(condition, num, "sample_backward_trajectories")
    return compiled_call(_backward_sampler, (ById(gfn),),
                         _policy_params(gfn, params, "backward", where="sample_backward_trajectories"),
                         key, terminal_states, condition)


def _backward_sampler(holder: ById):
    gfn = holder.value
    env = gfn.env
    policy = backward_policy(gfn)

    def run(params, key, terminal_states, condition):
        num = jax.tree.leaves(terminal_states)[0].shape[0]
        keys = particle_keys(key, num)
        traces = jax.vmap(lambda k, x, c: policy.simulate(k, params, x, c))(keys, terminal_states, condition)
        walked = jax.tree.map(lambda a, b: jnp.concatenate([a[:, None], b], axis=1), terminal_states, traces.retval)
        back = traces["steps", "action"]
        batch = jax.vmap(lambda u, b: _reverse(env, u, b))(walked, back)
        return batch._replace(condition=condition)

    return run


def _reverse(env: Environment, walked: State, back: jax.Array) -> Trajectories:
    """One backward walk ``u_0 = x .. u_T`` with actions ``b_t`` as a forward trajectory."""
    steps = env.max_steps
    length = jnp.sum(back != env.num_backward_actions).astype(jnp.int32)
    t = jnp.arange(steps + 1)
    states = jax.tree.map(lambda u: u[jnp.maximum(length - t, 0)], walked)
    j = length - 1 - jnp.arange(steps)
    inside = j >= 0
    j = jnp.maximum(j, 0)
    backward = back[j]
    child = jax.tree.map(lambda u: u[j], walked)
    actions = jax.vmap(env.forward_action)(child, jnp.minimum(backward, env.num_backward_actions - 1))
    actions = jnp.where(inside, actions, env.num_actions).astype(jnp.int32)
    backward = jnp.where(inside, backward, env.num_backward_actions).astype(jnp.int32)
    final = jax.tree.map(lambda u: u[0], walked)
    log_reward = jnp.where(env.is_terminal(final), env.log_reward(final), jnp.nan)
    return Trajectories(states, actions, backward, log_reward, length, None)


def truncate_trajectories(env: Environment, trajectories: Trajectories, num_steps: Any) -> Trajectories:
    """The first ``num_steps`` steps of each trajectory: partial trajectories (shapes unchanged).

    Steps from ``num_steps`` on become no-ops, the state reached after ``num_steps`` steps
    repeats, and ``log_reward`` is NaN where a trajectory is cut before its end. Detailed,
    sub-trajectory and forward-looking balance train on partial trajectories (FL-DB gets
    its credit from the reward of every state); trajectory balance needs complete ones (a
    NaN loss says so).

    Args:
      env: the environment.
      trajectories: a batch.
      num_steps: how many steps to keep (an int or an int array, traced or not).

    Returns:
      The truncated batch.

    Example:
        >>> import jax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [8])
        >>> batch = pg.gfn.sample_trajectories(gfn, params, jax.random.key(1), 64)
        >>> cut = pg.gfn.truncate_trajectories(env, batch, 2)
        >>> int(cut.length.max()), bool((cut.actions[:, 2:] == env.num_actions).all())
        (2, True)
    """
    batch = check_trajectories(trajectories, env, "truncate_trajectories")
    steps = jnp.arange(env.max_steps)
    length = jnp.minimum(batch.length, jnp.asarray(num_steps, jnp.int32)).astype(jnp.int32)
    keep = steps[None] < length[:, None]
    index = jnp.minimum(jnp.arange(env.max_steps + 1)[None], length[:, None])
    states = jax.tree.map(lambda x: jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1),
                          batch.states)
    return batch._replace(
        states=states,
        actions=jnp.where(keep, batch.actions, env.num_actions).astype(jnp.int32),
        backward_actions=jnp.where(keep, batch.backward_actions, env.num_backward_actions).astype(jnp.int32),
        log_reward=jnp.where(length == batch.length, batch.log_reward, jnp.nan),
        length=length,
    )


def check_trajectories(batch: Any, env: Environment, where: str) -> Trajectories:
    """``batch`` if it is a :class:`Trajectories` batch shaped for ``env``, else an :class:`ArgumentError`."""
    if not isinstance(batch, Trajectories):
        raise ArgumentError(f"{where}: batch must be None (sample on-policy) or a pg.gfn.Trajectories batch, got "
                            f"{type(batch).__name__}")
    if batch.actions.ndim != 2 or batch.actions.shape[1] != env.max_steps:
        raise ArgumentError(f"{where}: Trajectories.actions has shape {tuple(batch.actions.shape)}, expected "
                            f"(batch, max_steps={env.max_steps})")
    return batch


def _per_step(gfn: GFlowNet, params: Any, states: State, actions, backward_actions, condition):
    """One trajectory: ``(log P_F, log P_B)`` of each step, 0 after the end."""
    env = gfn.env
    before = jax.tree.map(lambda x: x[:-1], states)
    after = jax.tree.map(lambda x: x[1:], states)

    def one(s, a, s_next, b):
        log_pf = forward_action_log_probs(gfn, params, s, condition)[jnp.minimum(a, env.num_actions - 1)]
        log_pb = backward_action_log_probs(gfn, params, s_next, condition)[
            jnp.minimum(b, env.num_backward_actions - 1)]
        return (jnp.where(a == env.num_actions, 0.0, log_pf).astype(log_pf.dtype),
                jnp.where(b == env.num_backward_actions, 0.0, log_pb).astype(log_pb.dtype))

    return jax.vmap(one)(before, actions, after, backward_actions)


def trajectory_log_probs(gfn: GFlowNet, params: Any, trajectories: Trajectories) -> tuple[jax.Array, jax.Array]:
    """Per-step ``log P_F(s_{t+1} | s_t)`` and ``log P_B(s_t | s_{t+1})`` of a batch, 0 after each end.

    All steps are evaluated at once (one batched network call, no scan): summed over
    steps, the first is ``log P_F(tau)`` (the score of the trajectory's
    :func:`~probgen.gfn.policies.forward_policy` trace without exploration), the second
    ``log P_B(tau | x)``.

    Returns:
      ``(log_pf, log_pb)``, each of shape ``(batch, max_steps)``.

    Example:
        >>> import jax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [8])
        >>> batch = pg.gfn.sample_trajectories(gfn, params, jax.random.key(1), 3)
        >>> log_pf, log_pb = pg.gfn.trajectory_log_probs(gfn, params, batch)
        >>> log_pf.shape, bool((log_pf[:, -1] == 0).all())
        ((3, 7), True)
    """
    batch = check_trajectories(trajectories, gfn.env, "trajectory_log_probs")
    return compiled_call(_log_prob_program, (ById(gfn),),
                         _policy_params(gfn, params, "forward", "backward", where="trajectory_log_probs"), batch)


def _log_prob_program(holder: ById):
    gfn = holder.value

    def run(params, batch):
        return jax.vmap(lambda s, a, b, c: _per_step(gfn, params, s, a, b, c))(
            batch.states, batch.actions, batch.backward_actions, batch.condition)

    return run

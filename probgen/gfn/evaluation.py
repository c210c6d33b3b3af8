"""Evaluating a GFlowNet sampler: exact terminal distributions, distances, modes, log Z estimates.

On environments whose states can be listed (``env.all_states``), the distribution of the
learned sampler's terminal states is computed exactly by dynamic programming over the DAG:
a dense probability vector over the states, pushed through ``max_steps`` steps of the
forward policy in one ``lax.scan`` (terminal states keep their mass), so ``P_T(x)`` is the
sum over all trajectories ending at ``x`` without enumerating them. The target ``R^beta /
Z`` is over the terminal states reachable from ``s_0`` (``Z`` exact by enumeration). All
distributions are vectors over ``all_states()`` (zero at non-terminal states), compared
with :func:`l1_distance` or :func:`jensen_shannon_divergence`.

Sampled trajectories give the empirical distribution, the number of modes found, an
importance-sampling estimate of ``log Z`` from forward samples, and of ``log P_T(x)`` from
backward samples.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.compiled import compiled_call
from probgen.core.errors import ArgumentError, SettingError
from probgen.core.numerics import log_mean_exp
from probgen.gfn.envs import ById, Environment
from probgen.gfn.policies import GFlowNet, forward_action_log_probs
from probgen.gfn.trajectories import sample_backward_trajectories, sample_trajectories, trajectory_log_probs


def _listed(env: Environment, where: str):
    if env.all_states is None:
        raise SettingError(f"{where}: {env.name} cannot be listed (it has no all_states / state_index); exact "
                           "evaluation needs a small environment")
    return env.all_states()


def _transitions(env: Environment, states) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(next_index (N, A), valid (N, A), terminal (N,))`` of the listed states."""
    actions = jnp.arange(env.num_actions)
    next_index = jax.vmap(lambda s: jax.vmap(lambda a: env.state_index(env.step(s, a)))(actions))(states)
    terminal = jax.vmap(env.is_terminal)(states)
    valid = jax.vmap(env.forward_mask)(states) & ~terminal[:, None]
    return jnp.where(valid, next_index, 0), valid, terminal


def _push(mass: jax.Array, weights: jax.Array, next_index: jax.Array, terminal: jax.Array, steps: int,
          combine: str) -> jax.Array:
    """``steps`` steps of mass propagation: terminal states keep theirs, others pass it along valid edges."""

    def body(current, _):
        outgoing = (current[:, None] * weights).ravel()
        target = jnp.zeros_like(current).at[next_index.ravel()]
        moved = target.add(outgoing) if combine == "add" else target.max(outgoing)
        kept = jnp.where(terminal, current, jnp.zeros_like(current))
        return (moved + kept) if combine == "add" else jnp.maximum(moved, kept), None

    final, _ = jax.lax.scan(body, mass, None, length=steps)
    return final


def _reachable_terminals(env: Environment, states, next_index, valid, terminal) -> jax.Array:
    start = jax.nn.one_hot(env.state_index(env.initial_state), env.num_states, dtype=jnp.int32)
    reach = _push(start, valid.astype(jnp.int32), next_index, terminal, env.max_steps, "max")
    return (reach > 0) & terminal


def exact_terminal_distribution(gfn: GFlowNet, params: Any, condition: Any = None) -> jax.Array:
    """The exact probability that the forward policy ends in each state, by dynamic programming.

    Propagates the state distribution from ``s_0`` through ``max_steps`` steps of the
    forward policy (one ``lax.scan`` over a dense vector, transitions by scatter-add);
    terminal states keep their mass. Cost ``O(max_steps * num_states * num_actions)``.

    Args:
      gfn: a :class:`~probgen.gfn.policies.GFlowNet` whose environment can be listed.
      params: its parameters.
      condition: one condition (no batch axis) for a conditional GFlowNet, or None.

    Returns:
      ``(num_states,)`` probabilities over ``env.all_states()``; zero at non-terminal
      states (mass left there means trajectories longer than ``max_steps``).

    Raises:
      SettingError: the environment cannot be listed.

    Example:
        >>> import jax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [8])
        >>> p = jax.jit(lambda q: pg.gfn.exact_terminal_distribution(gfn, q))(params)
        >>> stop_at_origin = {"position": jax.numpy.zeros(2, "int32"), "stopped": jax.numpy.bool_(True)}
        >>> p.shape, round(float(p.sum()), 5), round(float(p[env.state_index(stop_at_origin)]), 5)   # 1/3
        ((32,), 1.0, 0.33333)
    """
    _listed(gfn.env, "exact_terminal_distribution")
    return compiled_call(_terminal_program, (ById(gfn),), params, condition)


def _terminal_program(holder: ById):
    gfn = holder.value
    env = gfn.env

    def run(params, condition):
        states = env.all_states()
        next_index, valid, terminal = _transitions(env, states)
        log_probs = jax.vmap(lambda s: forward_action_log_probs(gfn, params, s, condition))(states)
        weights = jnp.where(valid, jnp.exp(log_probs), 0.0)
        start = jax.nn.one_hot(env.state_index(env.initial_state), env.num_states, dtype=weights.dtype)
        return _push(start, weights, next_index, terminal, env.max_steps, "add")

    return run


def reward_distribution(env: Environment, reward_exponent: Any = 1.0) -> jax.Array:
    """The target ``R(x)^beta / Z`` over the listed states (zero except at reachable terminal states).

    Example:
        >>> import probgen as pg
        >>> target = pg.gfn.reward_distribution(pg.gfn.hypergrid(dim=2, height=8))
        >>> round(float(target.max()), 4), int((target > 0).sum())   # 2.501 / Z at the 4 sharp modes
        (0.1557, 64)
    """
    _listed(env, "reward_distribution")
    log_r, reachable = compiled_call(_reward_program, (ById(env),), reward_exponent)
    return jax.nn.softmax(jnp.where(reachable, log_r, -jnp.inf))


def _reward_program(holder: ById):
    env = holder.value

    def run(reward_exponent):
        states = env.all_states()
        next_index, valid, terminal = _transitions(env, states)
        reachable = _reachable_terminals(env, states, next_index, valid, terminal)
        return reward_exponent * jax.vmap(env.log_reward)(states), reachable

    return run


def exact_log_partition(env: Environment, reward_exponent: Any = 1.0) -> jax.Array:
    """``log Z = log sum_x R(x)^beta`` over the reachable terminal states, by enumeration.

    Example:
        >>> import probgen as pg
        >>> round(float(pg.gfn.exact_log_partition(pg.gfn.hypergrid(dim=2, height=8))), 4)   # log 16.064
        2.7766
    """
    _listed(env, "exact_log_partition")
    log_r, reachable = compiled_call(_reward_program, (ById(env),), reward_exponent)
    return jax.nn.logsumexp(jnp.where(reachable, log_r, -jnp.inf))


def empirical_distribution(env: Environment, terminal_states: Any) -> jax.Array:
    """The frequencies of sampled states over ``env.all_states()`` (e.g. ``trajectories.final_states``).

    Example:
        >>> import jax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [8])
        >>> batch = pg.gfn.sample_trajectories(gfn, params, jax.random.key(1), 200)
        >>> q = pg.gfn.empirical_distribution(env, batch.final_states)
        >>> q.shape, round(float(q.sum()), 5)
        ((32,), 1.0)
    """
    if env.state_index is None:
        raise SettingError(f"empirical_distribution: {env.name} cannot be listed (no state_index)")
    return compiled_call(_empirical_program, (ById(env),), terminal_states)


def _empirical_program(holder: ById):
    env = holder.value

    def run(terminal_states):
        index = jax.vmap(env.state_index)(terminal_states)
        counts = jnp.zeros(env.num_states, jnp.result_type(float)).at[index].add(1.0)
        return counts / index.shape[0]

    return run


def _check_pair(p, q, where):
    if jnp.shape(p) != jnp.shape(q):
        raise ArgumentError(f"{where}: the distributions have shapes {jnp.shape(p)} and {jnp.shape(q)}")


def l1_distance(p: jax.Array, q: jax.Array) -> jax.Array:
    """``sum |p - q|`` (twice the total variation distance).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> float(pg.gfn.l1_distance(jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0])))
        1.0
    """
    _check_pair(p, q, "l1_distance")
    return jnp.sum(jnp.abs(jnp.asarray(p) - jnp.asarray(q)))


def jensen_shannon_divergence(p: jax.Array, q: jax.Array) -> jax.Array:
    """``JSD(p, q) = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``, in nats (at most ``log 2``).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> round(float(pg.gfn.jensen_shannon_divergence(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))), 6)
        0.693147
    """
    _check_pair(p, q, "jensen_shannon_divergence")
    p, q = jnp.asarray(p), jnp.asarray(q)
    m = 0.5 * (p + q)

    def kl(a):
        return jnp.sum(jax.scipy.special.xlogy(a, a) - jax.scipy.special.xlogy(a, m))

    return 0.5 * kl(p) + 0.5 * kl(q)


def num_modes_found(env: Environment, terminal_states: Any, min_log_reward: Any) -> jax.Array:
    """How many distinct states with ``log R >= min_log_reward`` are among the samples.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=8)
        >>> x = {"position": jnp.array([[1, 1], [1, 1], [6, 1], [3, 3]], jnp.int32), "stopped": jnp.ones(4, bool)}
        >>> int(pg.gfn.num_modes_found(env, x, jnp.log(2.5)))
        2
    """
    if env.state_index is None:
        raise SettingError(f"num_modes_found: {env.name} cannot be listed (no state_index)")
    return compiled_call(_modes_program, (ById(env),), terminal_states, jnp.asarray(min_log_reward))


def _modes_program(holder: ById):
    env = holder.value

    def run(terminal_states, min_log_reward):
        index = jax.vmap(env.state_index)(terminal_states)
        is_mode = jax.vmap(env.log_reward)(terminal_states) >= min_log_reward
        found = jnp.zeros(env.num_states, bool).at[index].max(is_mode)
        return jnp.sum(found)

    return run


def _broadcast(condition: Any, num: int) -> Any:
    return jax.tree.map(lambda c: jnp.broadcast_to(c, (num,) + jnp.shape(c)), condition)


def log_partition_estimate(gfn: GFlowNet, params: Any, key: jax.Array, num_trajectories: int, *,
                           reward_exponent: Any = 1.0, condition: Any = None) -> jax.Array:
    """Importance-sampling estimate of ``log Z``: ``log mean exp(beta log R(x) + log P_B(tau|x) - log P_F(tau))``.

    Over ``num_trajectories`` on-policy trajectories. A consistent estimate, biased low for
    a finite sample (a stochastic lower bound in expectation, as an IWAE bound); exact for
    a perfectly trained GFlowNet.

    Args:
      gfn, params: the GFlowNet and its parameters.
      key: PRNG key.
      num_trajectories: the sample size (static).
      reward_exponent: ``beta``.
      condition: one condition (no batch axis), shared by all trajectories, or None.

    Example:
        >>> import jax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [8])
        >>> estimate = pg.gfn.log_partition_estimate(gfn, params, jax.random.key(1), 2000)
        >>> bool(abs(estimate - pg.gfn.exact_log_partition(env)) < 0.3)
        True
    """
    num = static_int(num_trajectories, "num_trajectories", "log_partition_estimate")
    batch = sample_trajectories(gfn, params, key, num, condition=_broadcast(condition, num))
    log_pf, log_pb = trajectory_log_probs(gfn, params, batch)
    return log_mean_exp(reward_exponent * batch.log_reward + log_pb.sum(-1) - log_pf.sum(-1))


def terminal_log_prob_estimate(gfn: GFlowNet, params: Any, key: jax.Array, terminal_states: Any,
                               num_samples: int, *, condition: Any = None) -> jax.Array:
    """Importance-sampling estimate of ``log P_T(x)``, the learned sampler's log probability of each ``x``.

    ``log mean exp(log P_F(tau) - log P_B(tau | x))`` over ``num_samples`` backward
    trajectories from each ``x``; exact when ``P_B`` is the posterior of the forward policy
    over trajectories, and for environments whose graph is a tree. For environments too
    large to list.

    Args:
      gfn, params: the GFlowNet and its parameters.
      key: PRNG key.
      terminal_states: a batch of terminal states (leading axis).
      num_samples: backward trajectories per state (static).
      condition: one condition (no batch axis), or None.

    Returns:
      ``(batch,)`` estimates.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> env = pg.gfn.bit_sequence(jnp.array([[0, 1, 1, 0]]), word_size=2, prepend=False)   # a tree
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [8])
        >>> x = {"words": jnp.array([[1, 2]], jnp.int32)}
        >>> round(float(jnp.exp(pg.gfn.terminal_log_prob_estimate(gfn, params, jax.random.key(1), x, 4)[0])), 4)
        0.0625
    """
    num_samples = static_int(num_samples, "num_samples", "terminal_log_prob_estimate")
    leaves = jax.tree.leaves(terminal_states)
    if not leaves or jnp.ndim(leaves[0]) == 0:
        raise ArgumentError("terminal_log_prob_estimate: terminal_states needs a leading batch axis")
    num = jnp.shape(leaves[0])[0]
    repeated = jax.tree.map(lambda x: jnp.repeat(x, num_samples, axis=0), terminal_states)
    batch = sample_backward_trajectories(gfn, params, key, repeated,
                                         condition=_broadcast(condition, num * num_samples))
    log_pf, log_pb = trajectory_log_probs(gfn, params, batch)
    log_w = (log_pf.sum(-1) - log_pb.sum(-1)).reshape(num, num_samples)
    return jax.vmap(log_mean_exp)(log_w)

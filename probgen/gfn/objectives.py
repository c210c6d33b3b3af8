"""GFlowNet training objectives, each a ``loss(params, key, batch=None) -> scalar`` to minimize.

Every constructor takes the :class:`~probgen.gfn.policies.GFlowNet` and returns a loss
that ``pg.fit``, ``pg.sweep``, ``jax.grad`` and optax take as it is:

* ``batch=None`` (what ``pg.fit`` passes without data): on-policy training; the loss
  draws ``num_trajectories`` trajectories from the current forward policy (parameters
  held fixed for the draw), explored with ``epsilon`` and ``temperature``, each under a
  condition from ``condition_sampler(key)`` when given;
* ``batch`` a :class:`~probgen.gfn.trajectories.Trajectories` batch: off-policy training
  on it (a replay buffer's sample, exploring or backward samples, data).

``params`` is the mapping of :mod:`probgen.gfn.policies` (``"forward"``, ``"backward"``,
``"log_flow"``, ``"log_Z"``). The target is ``R(x)^beta`` with ``beta =
reward_exponent``: ``log R`` is the batch's stored ``log_reward`` (computed once, when the
trajectory was drawn), or ``log_reward(params, state, condition)`` when that function is
given (a reward that depends on the condition, e.g. ``beta`` itself for a
temperature-conditioned GFlowNet, or on learned parameters, as in GFlowNet-EM). Every loss
uses ``log F(x) = beta log R(x)`` at terminal states.

The objectives, per trajectory ``s_0 -> ... -> s_n = x`` (``P_F``, ``P_B`` the forward and
backward policies):

* trajectory balance: ``(log Z + sum log P_F - beta log R(x) - sum log P_B)^2``;
* its log-partition-variance form (VarGrad): ``log Z`` replaced by the batch mean of
  ``beta log R + sum log P_B - sum log P_F`` (gradient stopped), i.e. the batch variance;
* detailed balance: ``(log F(s) + log P_F(s'|s) - log F(s') - log P_B(s|s'))^2`` per edge;
* sub-trajectory balance (lambda): the balance of every sub-trajectory ``s_i .. s_j``,
  weighted by ``lambda^(j - i)``;
* forward-looking detailed balance: detailed balance with ``log F(s) = log F~(s) + beta log
  R(s)``, a learned residual flow on top of the reward read at every state (local credit;
  incomplete trajectories train it too);
* modified detailed balance: for environments where every state may exit, with ``log
  P_F(exit | s)`` in place of state flows;
* flow matching: in-flow equals out-flow at every visited state, with the forward logits
  read as log edge flows.

References: Bengio et al. 2021 (flow matching); Bengio et al., "GFlowNet Foundations",
JMLR 2023 (detailed balance); Malkin et al. 2022 (trajectory balance); Madan et al.,
"Learning GFlowNets from partial episodes for improved convergence and stability",
ICML 2023 (sub-trajectory balance); Pan et al., "Better Training of GFlowNets with Local
Credit and Incomplete Trajectories", ICML 2023 (forward-looking); Deleu et al., "Bayesian
Structure Learning with Generative Flow Networks", UAI 2022 (modified detailed balance);
Malkin et al., "GFlowNets and variational inference", ICLR 2023, and Zhang et al.,
"Robust scheduling with GFlowNets", ICLR 2023 (the log-partition variance).
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.compiled import compiled_call
from probgen.core.errors import ArgumentError, SettingError
from probgen.gfn.envs import ById, default_float
from probgen.gfn.policies import (
    GFlowNet,
    check_exploration,
    check_gflownet,
    forward_action_log_probs,
    param_entry,
    policy_inputs,
)
from probgen.gfn.trajectories import Trajectories, check_trajectories, sample_trajectories, trajectory_log_probs

GFlowNetLoss = Callable[..., jax.Array]


class _Settings(NamedTuple):
    num_trajectories: int
    reward_exponent: Any
    log_reward: Callable | None
    epsilon: Any
    temperature: Any
    condition_sampler: Callable | None


def _settings(where, num_trajectories, reward_exponent, log_reward, epsilon, temperature, condition_sampler):
    num_trajectories = static_int(num_trajectories, "num_trajectories", where)
    check_exploration(epsilon, temperature, where)
    if isinstance(reward_exponent, numbers.Real) and not reward_exponent > 0:
        raise SettingError(f"{where}: reward_exponent must be positive, got {reward_exponent}")
    if log_reward is not None and not callable(log_reward):
        raise ArgumentError(f"{where}: log_reward must be a function (params, state, condition) -> scalar")
    if condition_sampler is not None and not callable(condition_sampler):
        raise ArgumentError(f"{where}: condition_sampler must be a function key -> condition")
    return _Settings(num_trajectories, reward_exponent, log_reward, epsilon, temperature, condition_sampler)


def _stop(params):
    """Parameters held fixed for an on-policy draw (non-array leaves of a module pass as they are)."""
    return jax.tree.map(lambda x: jax.lax.stop_gradient(x) if hasattr(x, "dtype") else x, params)


def _batch(gfn: GFlowNet, settings: _Settings, params, key, batch, where: str) -> Trajectories:
    if batch is not None:
        return check_trajectories(batch, gfn.env, where)
    num = settings.num_trajectories
    sample_key, condition_key = jax.random.split(key)
    condition = None
    if settings.condition_sampler is not None:
        condition = jax.vmap(settings.condition_sampler)(jax.random.split(condition_key, num))
    return sample_trajectories(gfn, _stop(params), sample_key, num, condition=condition,
                               epsilon=settings.epsilon, temperature=settings.temperature)


def _reward_fn(gfn, settings, params):
    if settings.log_reward is None:
        return lambda state, condition: gfn.env.log_reward(state)
    return lambda state, condition: jnp.asarray(settings.log_reward(params, state, condition))


def _terminal_log_reward(gfn, settings, params, batch: Trajectories) -> jax.Array:
    """``beta log R(x)`` per trajectory, ``(B,)``."""
    if settings.log_reward is None:
        log_r = batch.log_reward
    else:
        log_r = jax.vmap(_reward_fn(gfn, settings, params))(batch.final_states, batch.condition)
    return settings.reward_exponent * log_r


def _state_log_rewards(gfn, settings, params, batch: Trajectories) -> jax.Array:
    """``beta log R(s_t)`` at every state, ``(B, T+1)``."""
    reward = _reward_fn(gfn, settings, params)
    per = jax.vmap(lambda states, c: jax.vmap(lambda s: reward(s, c))(states))(batch.states, batch.condition)
    return settings.reward_exponent * per


def _terminal_flags(gfn, batch: Trajectories) -> jax.Array:
    return jax.vmap(jax.vmap(gfn.env.is_terminal))(batch.states)


def _log_flows(gfn: GFlowNet, params, batch: Trajectories, where: str) -> jax.Array:
    """The learned state log flows at every state, ``(B, T+1)``."""
    entry = param_entry(params, "log_flow", where)
    env = gfn.env

    def one(s, c):
        value = gfn.log_flow(entry, policy_inputs(env, s, c))
        if jnp.shape(value) != ():
            raise ArgumentError(f"{where}: GFlowNet.log_flow returns shape {jnp.shape(value)} for one state, "
                                "expected a scalar")
        return value

    return jax.vmap(lambda states, c: jax.vmap(lambda s: one(s, c))(states))(batch.states, batch.condition)


def _log_partition(gfn: GFlowNet, params, batch: Trajectories, where: str) -> jax.Array:
    entry = param_entry(params, "log_Z", where)
    num = batch.num_trajectories
    if gfn.log_partition is None:
        if jnp.shape(entry) != ():
            raise ArgumentError(f"{where}: params['log_Z'] must be a scalar (or set GFlowNet.log_partition for a "
                                f"conditional log Z), got shape {jnp.shape(entry)}")
        return jnp.broadcast_to(entry, (num,))
    if batch.condition is None:
        raise ArgumentError(f"{where}: GFlowNet.log_partition is a function of the condition, but the batch has none")
    flat = jax.vmap(lambda c: jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(c)]))(batch.condition)
    return jax.vmap(lambda c: gfn.log_partition(entry, c.astype(default_float())))(flat)


def _step_mask(batch: Trajectories) -> jax.Array:
    return jnp.arange(batch.actions.shape[1]) < batch.length[:, None]


def _masked_mean(values, mask):
    mask = mask.astype(values.dtype)
    return jnp.sum(jnp.where(mask > 0, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1.0)


def _flow_target(log_flows, terminal, terminal_log_reward):
    """State log flows with ``beta log R(x)`` at the terminal states."""
    return jnp.where(terminal, terminal_log_reward[:, None], log_flows)


def _edge_residuals(log_f, log_pf, log_pb):
    """Detailed-balance residuals of every edge, ``(B, T)``."""
    return log_f[:, :-1] + log_pf - log_f[:, 1:] - log_pb


def _objective(name: str, gfn: GFlowNet, compute: Callable, settings: _Settings, doc: str) -> GFlowNetLoss:
    check_gflownet(gfn, name)

    def loss(params: Any, key: jax.Array, batch: Trajectories | None = None) -> jax.Array:
        trajectories = _batch(gfn, settings, params, key, batch, name)
        # One compiled program per objective when called eagerly; inlined under jit.
        return compiled_call(_compute_program, (ById(compute),), params, trajectories)

    loss.__name__ = name
    loss.__qualname__ = name
    loss.__doc__ = doc
    return loss


def _compute_program(holder: ById) -> Callable:
    return holder.value


_LOSS_DOC = """The {what} loss of the GFlowNet: ``loss(params, key, batch=None) -> scalar``.

See :mod:`probgen.gfn.objectives` for ``batch`` (None: on-policy) and the reward."""


def _common(fn):
    """Appends the shared settings to a constructor's docstring."""
    fn.__doc__ = fn.__doc__.replace("    Common settings:\n", _COMMON_ARGS)
    return fn


# The settings every objective shares, as further entries of the Args section.
_COMMON_ARGS = """      num_trajectories: trajectories drawn per on-policy call (``batch=None``).
      reward_exponent: ``beta``, the target is ``R^beta`` (tempering).
      log_reward: ``(params, state, condition) -> scalar`` replacing the environment's
        ``log R`` (a conditional or learned reward); default: the batch's stored value.
      epsilon: on-policy exploration, the probability of a uniformly random valid action.
      temperature: on-policy exploration, divides the logits.
      condition_sampler: ``key -> condition`` for each on-policy trajectory (conditional
        GFlowNets); default: no condition.
"""


@_common
def trajectory_balance(
    gfn: GFlowNet, *, num_trajectories: int = 64, reward_exponent: Any = 1.0, log_reward: Callable | None = None,
    epsilon: Any = 0.0, temperature: Any = 1.0, condition_sampler: Callable | None = None,
) -> GFlowNetLoss:
    """Trajectory balance: ``mean (log Z + sum log P_F - beta log R(x) - sum log P_B)^2``.

    ``log Z`` is ``params["log_Z"]`` (or ``GFlowNet.log_partition`` of the condition); at
    the optimum it is the log partition function of ``R^beta``.

    Args:
      gfn: the :class:`~probgen.gfn.policies.GFlowNet`.
    Common settings:

    Returns:
      ``loss(params, key, batch=None) -> scalar``.

    Reference: Malkin et al., "Trajectory balance: Improved credit assignment in
    GFlowNets", NeurIPS 2022.

    Example:
        >>> import jax, optax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [32])
        >>> loss = pg.gfn.trajectory_balance(gfn, num_trajectories=16)
        >>> result = pg.fit(loss, params, optax.adam(0.01), jax.random.key(1), steps=50, progress=False)
        >>> bool(result.history["loss"][-10:].mean() < result.history["loss"][:10].mean())
        True
    """
    where = "trajectory_balance"
    settings = _settings(where, num_trajectories, reward_exponent, log_reward, epsilon, temperature,
                         condition_sampler)

    def compute(params, batch):
        log_pf, log_pb = trajectory_log_probs(gfn, params, batch)
        residual = (_log_partition(gfn, params, batch, where) + log_pf.sum(-1)
                    - _terminal_log_reward(gfn, settings, params, batch) - log_pb.sum(-1))
        return jnp.mean(residual ** 2)

    return _objective(where, gfn, compute, settings, _LOSS_DOC.format(what="trajectory balance"))


@_common
def log_partition_variance(
    gfn: GFlowNet, *, num_trajectories: int = 64, reward_exponent: Any = 1.0, log_reward: Callable | None = None,
    epsilon: Any = 0.0, temperature: Any = 1.0, condition_sampler: Callable | None = None,
) -> GFlowNetLoss:
    """Trajectory balance with ``log Z`` at its batch estimate: the variance of ``log P_F - log P_B - beta log R``.

    With ``r_i = sum log P_F - beta log R(x_i) - sum log P_B`` and ``zeta = -mean_i r_i``
    (gradient stopped), the loss is ``mean_i (zeta + r_i)^2``. No ``log_Z`` parameter is
    needed. Its gradient in the policy parameters equals the trajectory-balance gradient
    evaluated at ``log Z = zeta`` on the same batch (the term through ``zeta`` vanishes
    since ``sum_i (zeta + r_i) = 0``); on-policy, both are unbiased for the gradient of
    ``KL(P_F || P_B R^beta / Z)`` up to a factor (Malkin et al. 2023). All trajectories of
    a batch must share the target: one condition per batch for a conditional GFlowNet.

    Args:
      gfn: the :class:`~probgen.gfn.policies.GFlowNet`.
    Common settings:

    Returns:
      ``loss(params, key, batch=None) -> scalar``.

    References: Richter et al., "VarGrad: a low-variance gradient estimator for variational
    inference", NeurIPS 2020; Zhang et al., "Robust Scheduling with GFlowNets", ICLR 2023;
    Malkin et al., "GFlowNets and variational inference", ICLR 2023.

    Example:
        >>> import jax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [16])
        >>> loss = pg.gfn.log_partition_variance(gfn, num_trajectories=8)
        >>> float(loss(params, jax.random.key(1))) >= 0.0
        True
    """
    where = "log_partition_variance"
    settings = _settings(where, num_trajectories, reward_exponent, log_reward, epsilon, temperature,
                         condition_sampler)

    def compute(params, batch):
        log_pf, log_pb = trajectory_log_probs(gfn, params, batch)
        residual = log_pf.sum(-1) - _terminal_log_reward(gfn, settings, params, batch) - log_pb.sum(-1)
        zeta = jax.lax.stop_gradient(-jnp.mean(residual))
        return jnp.mean((zeta + residual) ** 2)

    return _objective(where, gfn, compute, settings, _LOSS_DOC.format(what="log-partition variance"))


def _needs_flow(gfn: GFlowNet, where: str) -> None:
    check_gflownet(gfn, where)
    if gfn.log_flow is None:
        raise SettingError(f"{where} needs state log flows: build the GFlowNet with a log_flow function "
                           "(pg.gfn.init_gflownet(..., log_flow=True))")


@_common
def detailed_balance(
    gfn: GFlowNet, *, num_trajectories: int = 64, reward_exponent: Any = 1.0, log_reward: Callable | None = None,
    epsilon: Any = 0.0, temperature: Any = 1.0, condition_sampler: Callable | None = None,
) -> GFlowNetLoss:
    """Detailed balance: ``(log F(s) + log P_F(s'|s) - log F(s') - log P_B(s|s'))^2``, mean over visited edges.

    ``log F`` is the ``GFlowNet.log_flow`` net (``params["log_flow"]``), replaced by
    ``beta log R(x)`` at terminal states.

    Args:
      gfn: a :class:`~probgen.gfn.policies.GFlowNet` with ``log_flow``.
    Common settings:

    Returns:
      ``loss(params, key, batch=None) -> scalar``.

    Raises:
      SettingError: the GFlowNet has no ``log_flow``.

    Reference: Bengio et al., "GFlowNet Foundations", JMLR 2023.

    Example:
        >>> import jax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [16], log_flow=True)
        >>> loss = pg.gfn.detailed_balance(gfn, num_trajectories=8)
        >>> jax.grad(loss)(params, jax.random.key(1))["log_flow"][0]["w"].shape
        (8, 16)
    """
    where = "detailed_balance"
    _needs_flow(gfn, where)
    settings = _settings(where, num_trajectories, reward_exponent, log_reward, epsilon, temperature,
                         condition_sampler)

    def compute(params, batch):
        log_pf, log_pb = trajectory_log_probs(gfn, params, batch)
        log_f = _flow_target(_log_flows(gfn, params, batch, where), _terminal_flags(gfn, batch),
                             _terminal_log_reward(gfn, settings, params, batch))
        return _masked_mean(_edge_residuals(log_f, log_pf, log_pb) ** 2, _step_mask(batch))

    return _objective(where, gfn, compute, settings, _LOSS_DOC.format(what="detailed balance"))


@_common
def subtrajectory_balance(
    gfn: GFlowNet, *, lamda: float = 0.9, num_trajectories: int = 64, reward_exponent: Any = 1.0,
    log_reward: Callable | None = None, epsilon: Any = 0.0, temperature: Any = 1.0,
    condition_sampler: Callable | None = None,
) -> GFlowNetLoss:
    """Sub-trajectory balance SubTB(lambda): the balance of every sub-trajectory, weighted by ``lambda^length``.

    For a trajectory of ``n`` steps and ``0 <= i < j <= n``, the residual is ``log F(s_i)
    + sum_{i<=t<j} log P_F - log F(s_j) - sum_{i<=t<j} log P_B``; the trajectory's loss is
    ``sum lambda^(j-i) residual^2 / sum lambda^(j-i)``, averaged over the batch. The pair
    ``(0, n)`` is trajectory balance with ``log Z = log F(s_0)``; one-step pairs are
    detailed balance. ``log F`` is the ``log_flow`` net, ``beta log R`` at terminal states.

    Args:
      gfn: a :class:`~probgen.gfn.policies.GFlowNet` with ``log_flow``.
      lamda: ``lambda > 0`` (small: mostly detailed balance; large: mostly trajectory balance).
    Common settings:

    Returns:
      ``loss(params, key, batch=None) -> scalar``.

    Reference: Madan et al., "Learning GFlowNets from partial episodes for improved
    convergence and stability", ICML 2023.

    Example:
        >>> import jax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [16], log_flow=True)
        >>> loss = pg.gfn.subtrajectory_balance(gfn, lamda=0.9, num_trajectories=8)
        >>> loss(params, jax.random.key(1)).shape
        ()
    """
    where = "subtrajectory_balance"
    _needs_flow(gfn, where)
    if not (isinstance(lamda, numbers.Real) and lamda > 0):
        raise SettingError(f"{where}: lamda must be a positive number, got {lamda!r}")
    settings = _settings(where, num_trajectories, reward_exponent, log_reward, epsilon, temperature,
                         condition_sampler)

    def compute(params, batch):
        log_pf, log_pb = trajectory_log_probs(gfn, params, batch)
        log_f = _flow_target(_log_flows(gfn, params, batch, where), _terminal_flags(gfn, batch),
                             _terminal_log_reward(gfn, settings, params, batch))
        # residual(i, j) = A_i - A_j with A_t = log F(s_t) - sum_{u<t} (log P_F - log P_B)_u.
        cumulative = jnp.concatenate([jnp.zeros_like(log_pf[:, :1]), jnp.cumsum(log_pf - log_pb, axis=1)], axis=1)
        a = log_f - cumulative
        residual = a[:, :, None] - a[:, None, :]
        positions = jnp.arange(a.shape[1])
        span = positions[None, :] - positions[:, None]           # j - i
        pairs = (span > 0)[None] & (positions[None, None, :] <= batch.length[:, None, None])
        weight = jnp.where(pairs, jnp.asarray(lamda, a.dtype) ** jnp.maximum(span, 0), 0.0)
        per_trajectory = jnp.sum(weight * jnp.where(pairs, residual, 0.0) ** 2, axis=(1, 2)) / jnp.maximum(
            jnp.sum(weight, axis=(1, 2)), jnp.finfo(a.dtype).tiny)
        return jnp.mean(per_trajectory)

    return _objective(where, gfn, compute, settings, _LOSS_DOC.format(what="sub-trajectory balance"))


@_common
def forward_looking_balance(
    gfn: GFlowNet, *, num_trajectories: int = 64, reward_exponent: Any = 1.0, log_reward: Callable | None = None,
    epsilon: Any = 0.0, temperature: Any = 1.0, condition_sampler: Callable | None = None,
) -> GFlowNetLoss:
    """Forward-looking detailed balance (FL-DB): detailed balance on top of the reward of every state.

    The state flow is ``log F(s) = log F~(s) + beta log R(s)``, with ``-log R(s)`` the
    energy of a (possibly partial) state and ``log F~`` the ``log_flow`` net (``log F~ =
    0`` at terminal states, where ``F = R``). Each edge's residual
    ``log F~(s) + log P_F(s'|s) - log F~(s') - log P_B(s|s') + beta (log R(s) - log R(s'))``
    carries its own energy difference (local credit), so incomplete trajectories
    train it too. The log reward must be defined at every state (the built-in
    environments' are; else pass ``log_reward``).

    Args:
      gfn: a :class:`~probgen.gfn.policies.GFlowNet` with ``log_flow``.
    Common settings:

    Returns:
      ``loss(params, key, batch=None) -> scalar``.

    Reference: Pan et al., "Better Training of GFlowNets with Local Credit and Incomplete
    Trajectories", ICML 2023.

    Example:
        >>> import jax, probgen as pg
        >>> env = pg.gfn.set_generation(4, lambda x: x.sum())
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [16], log_flow=True)
        >>> loss = pg.gfn.forward_looking_balance(gfn, num_trajectories=8)
        >>> bool(loss(params, jax.random.key(1)) >= 0)
        True
    """
    where = "forward_looking_balance"
    _needs_flow(gfn, where)
    settings = _settings(where, num_trajectories, reward_exponent, log_reward, epsilon, temperature,
                         condition_sampler)

    def compute(params, batch):
        log_pf, log_pb = trajectory_log_probs(gfn, params, batch)
        state_log_r = _state_log_rewards(gfn, settings, params, batch)
        residual_flow = _log_flows(gfn, params, batch, where)
        log_f = jnp.where(_terminal_flags(gfn, batch), state_log_r, residual_flow + state_log_r)
        return _masked_mean(_edge_residuals(log_f, log_pf, log_pb) ** 2, _step_mask(batch))

    return _objective(where, gfn, compute, settings, _LOSS_DOC.format(what="forward-looking detailed balance"))


@_common
def modified_detailed_balance(
    gfn: GFlowNet, *, num_trajectories: int = 64, reward_exponent: Any = 1.0, log_reward: Callable | None = None,
    epsilon: Any = 0.0, temperature: Any = 1.0, condition_sampler: Callable | None = None,
) -> GFlowNetLoss:
    """Modified detailed balance, for environments where every state may exit (``env.exit_action``).

    When each state ``s`` can be the terminal object (``F(s) P_F(exit|s) = R(s)``), state
    flows cancel from detailed balance; each non-exit edge ``s -> s'`` gives the residual
    ``beta log R(s) + log P_F(s'|s) + log P_F(exit|s') - beta log R(s') - log P_B(s|s') -
    log P_F(exit|s)``. No flow net; the log reward is read at every visited state.

    Args:
      gfn: a :class:`~probgen.gfn.policies.GFlowNet` whose environment has an ``exit_action``.
    Common settings:

    Returns:
      ``loss(params, key, batch=None) -> scalar``.

    Raises:
      SettingError: the environment has no exit action.

    Reference: Deleu et al., "Bayesian Structure Learning with Generative Flow Networks",
    UAI 2022.

    Example:
        >>> import jax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [16])
        >>> float(pg.gfn.modified_detailed_balance(gfn, num_trajectories=8)(params, jax.random.key(1))) >= 0
        True
    """
    where = "modified_detailed_balance"
    check_gflownet(gfn, where)
    exit_action = gfn.env.exit_action
    if exit_action is None:
        raise SettingError(f"{where} needs an environment whose every state may exit (env.exit_action); "
                           f"{gfn.env.name} has none")
    settings = _settings(where, num_trajectories, reward_exponent, log_reward, epsilon, temperature,
                         condition_sampler)

    def compute(params, batch):
        log_pf, log_pb = trajectory_log_probs(gfn, params, batch)
        state_log_r = _state_log_rewards(gfn, settings, params, batch)

        def exit_log_prob(states, c):
            return jax.vmap(lambda s: forward_action_log_probs(gfn, params, s, c)[exit_action])(states)

        log_exit = jax.vmap(exit_log_prob)(batch.states, batch.condition)
        # Non-terminal states only (a terminal state cannot exit again); masked below.
        log_exit = jnp.where(_terminal_flags(gfn, batch), 0.0, log_exit)
        residual = (state_log_r[:, :-1] + log_pf + log_exit[:, 1:]
                    - state_log_r[:, 1:] - log_pb - log_exit[:, :-1])
        mask = _step_mask(batch) & (batch.actions != exit_action)
        return _masked_mean(residual ** 2, mask)

    return _objective(where, gfn, compute, settings, _LOSS_DOC.format(what="modified detailed balance"))


def _masked_logsumexp(values, mask):
    """``log sum exp`` over the valid entries of the last axis; ``-inf`` (with finite gradients) if none."""
    any_valid = jnp.any(mask, axis=-1)
    safe = jnp.where(mask, values, jnp.where(any_valid[..., None], -jnp.inf, 0.0))
    return jnp.where(any_valid, jax.nn.logsumexp(safe, axis=-1), -jnp.inf)


@_common
def edge_flow_matching(
    gfn: GFlowNet, *, num_trajectories: int = 64, reward_exponent: Any = 1.0, log_reward: Callable | None = None,
    epsilon: Any = 0.0, temperature: Any = 1.0, condition_sampler: Callable | None = None,
) -> GFlowNetLoss:
    """GFlowNet flow matching: at every visited state but ``s_0``, log in-flow equals log out-flow.

    The forward logits are read as log edge flows ``log F(s -> s')`` (so the forward policy
    is their softmax). At a visited state ``s'``: in-flow ``sum over parents s of F(s ->
    s')`` (every valid backward action); out-flow ``R(s')^beta`` at a terminal state, else
    ``sum over valid actions of F(s' -> .)``. The loss is the mean of ``(log in - log
    out)^2``. (This is the flow-matching condition of GFlowNets, not the interpolant flow
    matching of :mod:`probgen.flows`.)

    Args:
      gfn: the :class:`~probgen.gfn.policies.GFlowNet`.
    Common settings:

    Returns:
      ``loss(params, key, batch=None) -> scalar``.

    Reference: Bengio et al., "Flow Network based Generative Models for Non-Iterative
    Diverse Candidate Generation", NeurIPS 2021.

    Example:
        >>> import jax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [16])
        >>> float(pg.gfn.edge_flow_matching(gfn, num_trajectories=8)(params, jax.random.key(1))) >= 0
        True
    """
    where = "edge_flow_matching"
    check_gflownet(gfn, where)
    settings = _settings(where, num_trajectories, reward_exponent, log_reward, epsilon, temperature,
                         condition_sampler)
    env = gfn.env
    backward_actions = jnp.arange(env.num_backward_actions)

    def compute(params, batch):
        entry = param_entry(params, "forward", where)

        def edge_logits(s, c):
            return gfn.forward_logits(entry, policy_inputs(env, s, c))

        def balance(s, c, terminal_log_r):
            parents = jax.vmap(env.backward_step, in_axes=(None, 0))(s, backward_actions)
            into = jax.vmap(env.forward_action, in_axes=(None, 0))(s, backward_actions)
            inflow_edges = jax.vmap(lambda p, a: edge_logits(p, c)[a])(parents, into)
            inflow = _masked_logsumexp(inflow_edges, env.backward_mask(s))
            outflow = jnp.where(env.is_terminal(s), terminal_log_r,
                                _masked_logsumexp(edge_logits(s, c), env.forward_mask(s)))
            return inflow - outflow

        terminal_log_r = _terminal_log_reward(gfn, settings, params, batch)
        later = jax.tree.map(lambda x: x[:, 1:], batch.states)
        residual = jax.vmap(lambda states, c, r: jax.vmap(lambda s: balance(s, c, r))(states))(
            later, batch.condition, terminal_log_r)
        return _masked_mean(residual ** 2, _step_mask(batch))

    return _objective(where, gfn, compute, settings, _LOSS_DOC.format(what="flow-matching"))

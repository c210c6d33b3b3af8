"""GFlowNet policies: masked categorical actions, the network spec, and policies as generative functions.

A :class:`GFlowNet` pairs an environment with the functions that read parameters: the
forward policy's logits (or, for flow matching, log edge flows), optionally learned
backward logits (else the backward policy is uniform over parents), a state log-flow and a
conditional log-partition. Parameters are one mapping with the entries ``"forward"``,
``"backward"``, ``"log_flow"`` and ``"log_Z"`` (each present when used); each entry is any
pytree the matching function reads: the plain nets of :func:`probgen.flows.init_mlp`
(what :func:`init_gflownet` builds) or a flax ``nnx`` module.

Policy networks see ``features(state)``, followed by the flattened *condition* when there
is one (a reward exponent, a target reward, an observation): reward- or
outcome-conditioned GFlowNets differ only in that extra input.

:func:`forward_policy` is a generative function: a ``pg.scan`` over ``max_steps`` steps,
each drawing ``"action"`` from a :class:`MaskedCategorical` (invalid actions have
probability 0; a terminal state takes the no-op ``num_actions`` with probability 1), so
one trajectory is one trace (``trace["steps", "action"]``, states in ``trace.retval``)
and its score is ``log P_F(tau)`` (under exploration, of the exploring policy).
:func:`backward_policy` is the same from a terminal state back to ``s_0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from numpyro.distributions import constraints

from probgen.core.checks import static_int
from probgen.core.combinators import scan
from probgen.core.errors import ArgumentError, SettingError
from probgen.core.gen import gen, sample
from probgen.core.gfi import GenerativeFunction
from probgen.core.validation import check
from probgen.distributions import Distribution
from probgen.flows.nets import init_mlp, mlp
from probgen.gfn.envs import Environment, default_float, tree_equal, tree_where

PARAM_ENTRIES = ("forward", "backward", "log_flow", "log_Z")


class MaskedCategorical(Distribution):
    """A categorical distribution over ``K`` actions of which only the ``mask``-ed ones are possible.

    ``log_prob`` is the log-softmax of ``logits`` over the valid entries (``-inf``
    elsewhere); a draw is never an invalid action. Validity lives in the mask, not in the
    logits: the logits at invalid entries are ignored (finite or ``-inf``), so the site has
    no parameter constraint for ``pg.validate`` to trip on (numpyro's ``Categorical``
    refuses ``-inf`` logits there), and gradients through the valid logits stay finite.

    Args:
      logits: ``(..., K)`` unnormalized log probabilities.
      mask: ``(..., K)`` booleans, True where the action is valid.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> d = pg.gfn.MaskedCategorical(jnp.zeros(3), jnp.array([True, False, True]))
        >>> float(jnp.exp(d.log_prob(0))), float(d.log_prob(1))
        (0.5, -inf)
    """

    support = constraints.nonnegative_integer

    def __init__(self, logits: jax.Array, mask: jax.Array):
        self.logits = jnp.asarray(logits)
        self.mask = jnp.asarray(mask)
        if self.mask.shape != self.logits.shape:
            raise ArgumentError(f"MaskedCategorical: mask has shape {self.mask.shape} but logits "
                                f"{self.logits.shape}; one mask entry per action")

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.logits.shape[:-1])

    def log_probs(self) -> jax.Array:
        """The normalized log probabilities of every action (``-inf`` at invalid ones)."""
        return masked_log_softmax(self.logits, self.mask)

    def sample(self, key: jax.Array) -> jax.Array:
        masked = jnp.where(self.mask, self.logits, -jnp.inf)
        return jax.random.categorical(key, masked).astype(jnp.int32)

    def log_prob(self, value: jax.Array) -> jax.Array:
        value = jnp.asarray(value)
        picked = jnp.take_along_axis(self.log_probs(), jnp.clip(value, 0, self.logits.shape[-1] - 1)[..., None], -1)
        inside = (value >= 0) & (value < self.logits.shape[-1])
        return jnp.where(inside, picked[..., 0], -jnp.inf)


def masked_log_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Log-softmax over the ``mask``-ed entries of the last axis; ``-inf`` elsewhere.

    A row without any valid entry gives ``-inf`` everywhere (never NaN), so terminal states
    and padding need no special case, and gradients stay finite.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> [round(float(v), 4) for v in pg.gfn.masked_log_softmax(jnp.zeros(3), jnp.array([True, True, False]))]
        [-0.6931, -0.6931, -inf]
    """
    any_valid = jnp.any(mask, axis=-1, keepdims=True)
    safe = jnp.where(mask & any_valid, logits, jnp.where(any_valid, -jnp.inf, 0.0))
    return jnp.where(mask, jax.nn.log_softmax(safe, axis=-1), -jnp.inf)


class GFlowNet(NamedTuple):
    """An environment and the functions that turn parameters into a GFlowNet's quantities.

    Each function takes its own parameter entry and the policy input (``features(state)``
    followed by the flattened condition, if any; see :func:`policy_inputs`):

    Attributes:
      env: the :class:`~probgen.gfn.envs.Environment`.
      forward_logits: ``(params["forward"], inputs) -> float[num_actions]``, the forward
        policy's logits (flow matching reads them as log edge flows).
      backward_logits: ``(params["backward"], inputs) -> float[num_backward_actions]``, or
        None for the uniform backward policy over parents.
      log_flow: ``(params["log_flow"], inputs) -> scalar`` state log flow, for detailed and
        sub-trajectory balance (None when not used).
      log_partition: ``(params["log_Z"], condition) -> scalar`` for a conditional log Z;
        None: ``params["log_Z"]`` is the scalar log Z itself.

    Example:
        >>> import jax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [16])
        >>> sorted(params), gfn.backward_logits is None
        (['forward', 'log_Z'], True)
    """

    env: Environment
    forward_logits: Callable[[Any, jax.Array], jax.Array]
    backward_logits: Callable[[Any, jax.Array], jax.Array] | None = None
    log_flow: Callable[[Any, jax.Array], jax.Array] | None = None
    log_partition: Callable[[Any, jax.Array], jax.Array] | None = None


def _scalar_mlp(params: Any, x: jax.Array) -> jax.Array:
    return mlp(params, x)[..., 0]


def init_gflownet(
    key: jax.Array,
    env: Environment,
    hidden_sizes: Sequence[int] = (64, 64),
    *,
    learned_backward: bool = False,
    log_flow: bool = False,
    condition_size: int = 0,
) -> tuple[GFlowNet, dict]:
    """A :class:`GFlowNet` of MLPs (:func:`probgen.flows.mlp`) and its initial parameters.

    Output layers start at zero: the forward (and backward) policy starts uniform over
    the valid actions, log flows and log Z at 0.

    Args:
      key: PRNG key.
      env: the environment.
      hidden_sizes: widths of the hidden layers of every net.
      learned_backward: learn the backward policy (else uniform over parents).
      log_flow: add a state log-flow net (detailed / sub-trajectory balance, FL-DB).
      condition_size: the length of the flattened condition the policies take (0: none).
        With a condition, log Z is an MLP of the condition.

    Returns:
      ``(gfn, params)`` with params entries ``"forward"``, ``"log_Z"`` and, when asked,
      ``"backward"`` and ``"log_flow"``.

    Example:
        >>> import jax, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [32], log_flow=True)
        >>> sorted(params), params["forward"][0]["w"].shape
        (['forward', 'log_Z', 'log_flow'], (8, 32))
    """
    condition_size = static_int(condition_size, "condition_size", "init_gflownet", minimum=0)
    hidden = [static_int(h, "hidden_sizes[i]", "init_gflownet") for h in hidden_sizes]
    num_features = jax.eval_shape(env.features, env.initial_state).shape[0]
    width = num_features + condition_size
    k_forward, k_backward, k_flow, k_z = jax.random.split(key, 4)
    params: dict = {"forward": init_mlp(k_forward, [width, *hidden, env.num_actions])}
    if learned_backward:
        params["backward"] = init_mlp(k_backward, [width, *hidden, env.num_backward_actions])
    if log_flow:
        params["log_flow"] = init_mlp(k_flow, [width, *hidden, 1])
    if condition_size:
        params["log_Z"] = init_mlp(k_z, [condition_size, *hidden, 1])
    else:
        params["log_Z"] = jnp.zeros((), default_float())
    gfn = GFlowNet(
        env, mlp, mlp if learned_backward else None, _scalar_mlp if log_flow else None,
        _scalar_mlp if condition_size else None,
    )
    return gfn, params


def param_entry(params: Any, name: str, where: str) -> Any:
    """``params[name]``, or an :class:`ArgumentError` saying which entry is missing."""
    if not isinstance(params, Mapping):
        raise ArgumentError(f"{where}: params must be a mapping with entries among {PARAM_ENTRIES}, "
                            f"got {type(params).__name__}")
    if name not in params:
        raise ArgumentError(f"{where}: params has no {name!r} entry (present: {sorted(params)}); "
                            f"it holds the parameters of the {_ROLE[name]}")
    return params[name]


_ROLE = {"forward": "forward policy (GFlowNet.forward_logits)", "backward": "learned backward policy",
         "log_flow": "state log-flow net (GFlowNet.log_flow)", "log_Z": "log partition function"}


def policy_inputs(env: Environment, state: Any, condition: Any = None) -> jax.Array:
    """The input of the policy networks at ``state``: its features, then the flattened condition.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> pg.gfn.policy_inputs(env, env.initial_state, jnp.array(2.0)).shape
        (9,)
    """
    features = env.features(state)
    if condition is None:
        return features
    extra = [jnp.ravel(leaf).astype(features.dtype) for leaf in jax.tree.leaves(condition)]
    return jnp.concatenate([features, *extra])


def _checked(out: jax.Array, size: int, what: str) -> jax.Array:
    if jnp.shape(out) != (size,):
        raise ArgumentError(f"{what} returns shape {tuple(jnp.shape(out))} for one state, expected ({size},)")
    return out


def forward_action_log_probs(gfn: GFlowNet, params: Any, state: Any, condition: Any = None,
                             temperature: Any = None) -> jax.Array:
    """``log P_F(a | state)`` for every forward action (``-inf`` where invalid), optionally at a temperature.

    With ``temperature`` ``T`` the logits are divided by ``T`` before normalizing
    (tempered exploration). At a terminal state every entry is ``-inf`` when its mask is
    empty (terminal states take the no-op, see :func:`forward_policy`).

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [8])
        >>> [round(float(p), 4) for p in jnp.exp(pg.gfn.forward_action_log_probs(gfn, params, env.initial_state))]
        [0.3333, 0.3333, 0.3333]
    """
    return masked_log_softmax(_forward_logits(gfn, params, state, condition, temperature), gfn.env.forward_mask(state))


def _forward_logits(gfn: GFlowNet, params: Any, state: Any, condition: Any, temperature: Any) -> jax.Array:
    """The forward logits at ``state`` (divided by ``temperature`` unless it is None), not normalized."""
    env = gfn.env
    logits = gfn.forward_logits(param_entry(params, "forward", "forward policy"), policy_inputs(env, state, condition))
    logits = _checked(logits, env.num_actions, "GFlowNet.forward_logits")
    return logits if temperature is None else logits / temperature


def backward_action_log_probs(gfn: GFlowNet, params: Any, state: Any, condition: Any = None) -> jax.Array:
    """``log P_B(b | state)`` for every backward action: uniform over the valid ones, or learned.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [8])
        >>> state = {"position": jnp.array([1, 2], jnp.int32), "stopped": jnp.bool_(False)}
        >>> jnp.exp(pg.gfn.backward_action_log_probs(gfn, params, state)).tolist()
        [0.5, 0.5, 0.0]
    """
    env = gfn.env
    mask = env.backward_mask(state)
    if gfn.backward_logits is None:
        count = jnp.sum(mask).astype(default_float())
        return jnp.where(mask, -jnp.log(jnp.maximum(count, 1.0)), -jnp.inf)
    logits = gfn.backward_logits(param_entry(params, "backward", "backward policy"),
                                 policy_inputs(env, state, condition))
    return masked_log_softmax(_checked(logits, env.num_backward_actions, "GFlowNet.backward_logits"), mask)


def exploration_log_probs(log_probs: jax.Array, mask: jax.Array, epsilon: Any) -> jax.Array:
    """``log((1 - epsilon) p + epsilon u)`` with ``u`` uniform over the valid actions (epsilon-uniform exploration).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> p = jnp.log(jnp.array([1.0, 0.0, 0.0]))
        >>> jnp.exp(pg.gfn.exploration_log_probs(p, jnp.array([True, True, False]), 0.5)).tolist()
        [0.75, 0.25, 0.0]
    """
    count = jnp.maximum(jnp.sum(mask), 1).astype(log_probs.dtype)
    epsilon = jnp.asarray(epsilon, log_probs.dtype)
    uniform = jnp.where(mask, -jnp.log(count), -jnp.inf)
    mixed = jnp.logaddexp(jnp.log1p(-epsilon) + log_probs, jnp.log(epsilon) + uniform)
    return jnp.where(mask, mixed, -jnp.inf)


def forward_policy(gfn: GFlowNet) -> GenerativeFunction:
    """The forward policy as a generative function over whole trajectories.

    ``forward_policy(gfn).simulate(key, params, condition=None, epsilon=0.0,
    temperature=1.0)`` runs ``max_steps`` steps of a ``pg.scan`` (address ``"steps"``);
    step ``t`` draws ``"action"`` from a :class:`MaskedCategorical` over the valid actions
    of the current state plus the no-op ``num_actions``, which is the only valid choice
    at a terminal state (it keeps the state). With ``epsilon > 0`` or ``temperature != 1``
    the draws follow the exploring policy ``(1 - epsilon) softmax(logits / T) + epsilon
    uniform``. The return value stacks the states after each step (``s_1 .. s_T``); the
    score is the log probability of the actions under the policy that drew them. Under
    ``pg.validate``, a non-terminal state without valid actions, or a trajectory not
    finished after ``max_steps``, raises.

    Args:
      gfn: the :class:`GFlowNet`.

    Returns:
      A generative function of ``(params, condition=None, epsilon=0.0, temperature=1.0)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [8])
        >>> trace = pg.gfn.forward_policy(gfn).simulate(jax.random.key(1), params)
        >>> trace["steps", "action"].shape, bool(trace.retval["stopped"][-1])
        ((7,), True)
    """
    env = gfn.env
    noop = env.num_actions

    @gen
    def forward_step(carry, t):
        state, params, condition, epsilon, temperature = carry
        terminal = env.is_terminal(state)
        mask = env.forward_mask(state)
        check(terminal | jnp.any(mask), f"forward_policy({env.name}): the state at step {{t}} is not terminal "
              "but has no valid forward action (check forward_mask / is_terminal)", t=t)
        if epsilon is None:
            # No exploration: draw from the logits as they are. MaskedCategorical normalizes
            # over the valid actions, so the law and the score (log P_F) are the same, without
            # a log-softmax and a mixture on the sampling path.
            logits = _forward_logits(gfn, params, state, condition, temperature)
        else:
            logits = exploration_log_probs(forward_action_log_probs(gfn, params, state, condition, temperature),
                                           mask, epsilon)
        choice = MaskedCategorical(jnp.append(logits, jnp.zeros((), logits.dtype)),
                                   jnp.append(mask & ~terminal, terminal))
        action = sample("action", choice)
        next_state = tree_where(terminal, state, env.step(state, jnp.minimum(action, noop - 1)))
        return (next_state, params, condition, epsilon, temperature), next_state

    steps = scan(forward_step, length=env.max_steps)

    @gen
    def trajectory(params, condition=None, epsilon=0.0, temperature=1.0):
        dtype = default_float()
        # Python 0 / 1 (or None) mean no exploration: statically, so the plain policy pays nothing for it.
        epsilon = None if no_exploration(epsilon, 0) else jnp.asarray(epsilon, dtype)
        temperature = None if no_exploration(temperature, 1) else jnp.asarray(temperature, dtype)
        carry = (env.initial_state, params, condition, epsilon, temperature)
        (final, *_), states = sample("steps", steps, carry, jnp.arange(env.max_steps))
        check(env.is_terminal(final), f"forward_policy({env.name}): a trajectory did not reach a terminal state "
              f"within max_steps={env.max_steps}")
        return states

    trajectory.__name__ = f"forward_policy({env.name})"
    return trajectory


def backward_policy(gfn: GFlowNet) -> GenerativeFunction:
    """The backward policy as a generative function: from a terminal state back to ``s_0``.

    ``backward_policy(gfn).simulate(key, params, terminal_state, condition=None)`` runs
    ``max_steps`` steps of a ``pg.scan`` (address ``"steps"``), each drawing the backward
    ``"action"`` (uniform over parents, or the learned policy); at ``s_0`` the no-op
    ``num_backward_actions`` is taken with probability 1. The return value stacks the
    states after each step; the score is ``log P_B(tau | x)``.

    Args:
      gfn: the :class:`GFlowNet`.

    Returns:
      A generative function of ``(params, terminal_state, condition=None)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [8])
        >>> x = {"position": jnp.array([1, 0], jnp.int32), "stopped": jnp.bool_(True)}
        >>> trace = pg.gfn.backward_policy(gfn).simulate(jax.random.key(1), params, x)
        >>> trace["steps", "action"][:3].tolist(), float(trace.score)   # un-exit, decrement 0, no-op
        ([2, 0, 3], 0.0)
    """
    env = gfn.env
    noop = env.num_backward_actions

    @gen
    def backward_step(carry, t):
        state, params, condition = carry
        initial = tree_equal(state, env.initial_state)
        mask = env.backward_mask(state)
        check(initial | jnp.any(mask), f"backward_policy({env.name}): the state at step {{t}} is not the initial "
              "state but has no valid backward action (check backward_mask)", t=t)
        log_probs = backward_action_log_probs(gfn, params, state, condition)
        choice = MaskedCategorical(jnp.append(log_probs, jnp.zeros((), log_probs.dtype)),
                                   jnp.append(mask & ~initial, initial))
        action = sample("action", choice)
        parent = tree_where(initial, state, env.backward_step(state, jnp.minimum(action, noop - 1)))
        return (parent, params, condition), parent

    steps = scan(backward_step, length=env.max_steps)

    @gen
    def trajectory(params, terminal_state, condition=None):
        check(env.is_terminal(terminal_state), f"backward_policy({env.name}): the starting state is not terminal")
        (first, *_), states = sample("steps", steps, (terminal_state, params, condition), jnp.arange(env.max_steps))
        check(tree_equal(first, env.initial_state), f"backward_policy({env.name}): the backward walk did not reach "
              f"the initial state within max_steps={env.max_steps}")
        return states

    trajectory.__name__ = f"backward_policy({env.name})"
    return trajectory


def no_exploration(value: Any, neutral: float) -> bool:
    """Whether an exploration setting is None or the static Python number ``neutral`` (no effect)."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == neutral)


def check_condition_size(condition: Any, num: int, where: str) -> None:
    """Raise unless every leaf of ``condition`` has a leading axis of ``num`` (one per trajectory)."""
    for leaf in jax.tree.leaves(condition):
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != num:
            raise ArgumentError(f"{where}: condition needs a leading axis of {num} (one per trajectory), got shape "
                                f"{tuple(jnp.shape(leaf))}")


def check_gflownet(gfn: Any, where: str) -> None:
    """``gfn`` is a :class:`GFlowNet`, or an error naming ``where``."""
    if not isinstance(gfn, GFlowNet):
        raise ArgumentError(f"{where}: expected a pg.gfn.GFlowNet, got {type(gfn).__name__}")


def check_exploration(epsilon: Any, temperature: Any, where: str) -> None:
    """``epsilon`` in ``[0, 1]``, ``temperature > 0``: checked at trace time if static, else under ``pg.validate``."""
    for name, value, ok, expected in (
        ("epsilon", epsilon, lambda v: (v >= 0) & (v <= 1), "in [0, 1]"),
        ("temperature", temperature, lambda v: v > 0, "positive"),
    ):
        if isinstance(value, (int, float)):
            if not ok(value):
                raise SettingError(f"{where}: {name} must be {expected}, got {value}")
        else:
            check(ok(jnp.asarray(value)), f"{where}: {name} must be {expected}, got {{value}}",
                  value=jnp.asarray(value))

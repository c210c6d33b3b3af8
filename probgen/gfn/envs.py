"""GFlowNet environments as pure JAX: the protocol, its checks, and the hypergrid.

An environment is a DAG over states, walked from one initial state ``s_0`` by forward
actions until a *terminal* state, whose reward the GFlowNet learns to sample in proportion
to. States are pytrees of fixed-shape arrays; every function of the protocol is pure and
acts on one state (batching is ``jax.vmap``'s job), so environments run under ``jit``,
``vmap`` and ``lax.scan``.

Termination. A terminal state absorbs: the samplers take a no-op there with probability 1,
so every trajectory has the static length ``max_steps`` (padded after it ends). Two common
shapes fit the one protocol:

- an *exit action* (hypergrid, set generation): every state may stop; the state carries a
  ``stopped`` flag, the exit action sets it, and the stopped state is terminal. Its only
  parent is the same state not stopped (one backward action, probability 1);
- a fixed horizon (bit sequences): a state is terminal when it is complete.

Backward actions index the ways back to a parent. Forward action ``a`` at ``s`` and
backward action ``backward_action(s, a)`` at ``step(s, a)`` are the same edge, seen from
both ends; ``forward_action`` is the inverse map. Environments whose states can be listed
(``all_states``, ``state_index``) get exact evaluation (:mod:`probgen.gfn.evaluation`) and
a full check of their definition (:func:`check_environment`).

Reference: Bengio et al., "Flow Network based Generative Models for Non-Iterative Diverse
Candidate Generation", NeurIPS 2021 (the hypergrid).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core.checks import static_int
from probgen.core.errors import ArgumentError, SettingError
from probgen.core.validation import ValidationError, check

State = Any  # a pytree of fixed-shape arrays


class Environment(NamedTuple):
    """A GFlowNet environment: pure functions of one state, and static sizes.

    Build one with :func:`environment` (which checks the definition and fills in the
    optional fields) or use a built-in (:func:`hypergrid`, :func:`bit_sequence`,
    :func:`set_generation`). Close over it; do not pass it through ``jax.jit`` as an argument.

    Attributes:
      initial_state: ``s_0``, a pytree of arrays.
      forward_mask: ``state -> bool[num_actions]``, the valid forward actions (ignored at
        terminal states).
      step: ``(state, action) -> state``, the child reached by a valid action.
      backward_mask: ``state -> bool[num_backward_actions]``, the valid backward actions
        (one per way back to a parent; none at ``s_0``).
      backward_step: ``(state, backward_action) -> parent state``.
      is_terminal: ``state -> bool``; a terminal state absorbs.
      log_reward: ``state -> float``, ``log R`` of a terminal state (forward-looking and
        modified detailed balance also read it at the other states).
      features: ``state -> float[num_features]``, the input of the policy networks.
      backward_action: ``(state, action) -> int``, the backward action at ``step(state,
        action)`` that leads back to ``state``.
      forward_action: ``(state, backward_action) -> int``, the forward action at
        ``backward_step(state, backward_action)`` that leads to ``state``.
      num_actions, num_backward_actions, max_steps: static ints; every trajectory ends
        within ``max_steps`` steps.
      exit_action: the index of the exit action when every non-terminal state may stop
        (needed by modified detailed balance), else None.
      num_states, all_states, state_index: for environments small enough to list:
        ``all_states()`` stacks every state (leading axis ``num_states``), and
        ``state_index(state)`` is the position of ``state`` in that list.
      name: shown in messages.

    Example:
        >>> import probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=4)
        >>> env.num_actions, env.num_backward_actions, env.max_steps, env.num_states
        (3, 3, 7, 32)
    """

    initial_state: State
    forward_mask: Callable[[State], jax.Array]
    step: Callable[[State, jax.Array], State]
    backward_mask: Callable[[State], jax.Array]
    backward_step: Callable[[State, jax.Array], State]
    is_terminal: Callable[[State], jax.Array]
    log_reward: Callable[[State], jax.Array]
    features: Callable[[State], jax.Array]
    backward_action: Callable[[State, jax.Array], jax.Array]
    forward_action: Callable[[State, jax.Array], jax.Array]
    num_actions: int
    num_backward_actions: int
    max_steps: int
    exit_action: int | None = None
    num_states: int | None = None
    all_states: Callable[[], State] | None = None
    state_index: Callable[[State], jax.Array] | None = None
    name: str = "environment"


# -- pytree helpers shared by the subpackage ---------------------------------------------


def tree_where(condition: jax.Array, x: State, y: State) -> State:
    """``x`` where ``condition`` holds, else ``y``, leaf by leaf (``condition`` broadcasts)."""
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), x, y)


def tree_equal(x: State, y: State) -> jax.Array:
    """Whether two states are equal (a boolean scalar)."""
    leaves = [jnp.all(a == b) for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y))]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


class ById:
    """Holds a static object (an environment, a GFlowNet) so that it hashes by identity.

    The key of compiled-program caches (:func:`probgen.core.compiled.compiled_call`): an
    environment holds arrays, so it cannot hash by value; the same object reuses the program.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ById) and other.value is self.value


def default_float() -> Any:
    """The default float dtype (float64 under ``jax_enable_x64``)."""
    return jnp.result_type(float)


def _flat_features(state: State) -> jax.Array:
    leaves = [jnp.ravel(leaf).astype(default_float()) for leaf in jax.tree.leaves(state)]
    return jnp.concatenate(leaves)


# -- building and checking an environment -------------------------------------------------


def _search_backward_action(step, backward_mask, backward_step, num_backward_actions):
    def backward_action(state, action):
        child = step(state, action)
        parents = jax.vmap(backward_step, in_axes=(None, 0))(child, jnp.arange(num_backward_actions))
        match = backward_mask(child) & jax.vmap(lambda p: tree_equal(p, state))(parents)
        check(jnp.any(match), "backward_action: no valid backward action at step(state, {action}) leads back "
              "to state; check backward_mask / backward_step", action=action)
        return jnp.argmax(match).astype(jnp.int32)

    return backward_action


def _search_forward_action(step, forward_mask, backward_step, num_actions):
    def forward_action(state, backward):
        parent = backward_step(state, backward)
        children = jax.vmap(step, in_axes=(None, 0))(parent, jnp.arange(num_actions))
        match = forward_mask(parent) & jax.vmap(lambda c: tree_equal(c, state))(children)
        check(jnp.any(match), "forward_action: no valid forward action at backward_step(state, {backward}) "
              "leads to state; check forward_mask / step", backward=backward)
        return jnp.argmax(match).astype(jnp.int32)

    return forward_action


def _spec(tree) -> list:
    return [(tuple(s.shape), jnp.dtype(s.dtype)) for s in jax.tree.leaves(tree)]


def _check_output(name: str, where: str, value, shape: tuple, kind: str) -> None:
    if tuple(value.shape) != shape:
        raise ArgumentError(f"{where}: {name} returns shape {tuple(value.shape)}, expected {shape}")
    dtype = jnp.dtype(value.dtype)
    ok = {"bool": dtype == jnp.bool_, "float": jnp.issubdtype(dtype, jnp.floating),
          "int": jnp.issubdtype(dtype, jnp.integer)}[kind]
    if not ok:
        raise ArgumentError(f"{where}: {name} returns dtype {dtype}, expected a {kind} array")


def environment(
    initial_state: State,
    *,
    forward_mask: Callable[[State], jax.Array],
    step: Callable[[State, jax.Array], State],
    backward_mask: Callable[[State], jax.Array],
    backward_step: Callable[[State, jax.Array], State],
    is_terminal: Callable[[State], jax.Array],
    log_reward: Callable[[State], jax.Array],
    num_actions: int,
    num_backward_actions: int,
    max_steps: int,
    features: Callable[[State], jax.Array] | None = None,
    backward_action: Callable[[State, jax.Array], jax.Array] | None = None,
    forward_action: Callable[[State, jax.Array], jax.Array] | None = None,
    exit_action: int | None = None,
    num_states: int | None = None,
    all_states: Callable[[], State] | None = None,
    state_index: Callable[[State], jax.Array] | None = None,
    name: str = "environment",
) -> Environment:
    """Define a GFlowNet environment from pure functions of one state, checking their shapes.

    Every function is traced once on ``initial_state`` (``jax.eval_shape``, nothing runs):
    masks must be boolean of lengths ``num_actions`` / ``num_backward_actions``,
    ``is_terminal`` a boolean scalar, ``log_reward`` a float scalar, ``features`` a float
    vector, and ``step`` / ``backward_step`` must return states of the initial state's
    structure, shapes and dtypes. Values (a non-terminal state with no valid action, a
    backward step that is not the inverse of a step) are checked by
    :func:`check_environment` for listable environments, and at run time under
    ``pg.validate`` by the samplers.

    Args:
      initial_state: ``s_0``, a pytree of arrays.
      forward_mask, step, backward_mask, backward_step, is_terminal, log_reward: the
        protocol's functions (see :class:`Environment`).
      num_actions, num_backward_actions, max_steps: static sizes.
      features: the policy input; default: every leaf of the state, flattened, as floats.
      backward_action, forward_action: the maps between the two ends of an edge; default:
        a search over all actions (first match). Give them when several actions join the
        same two states.
      exit_action: index of the exit action, if every non-terminal state may stop.
      num_states, all_states, state_index: give all three for exact evaluation.
      name: used in messages.

    Returns:
      An :class:`Environment`.

    Raises:
      SettingError: a count is not a positive int, a mask's length differs from its count,
        or only some of ``num_states`` / ``all_states`` / ``state_index`` are given.
      ArgumentError: a function returns the wrong shape, dtype or state structure.

    Example (a chain ``0 -> 1 -> ... -> 3`` that may stop anywhere, reward ``n + 1``):
        >>> import jax.numpy as jnp, probgen as pg
        >>> init = {"n": jnp.int32(0), "stopped": jnp.bool_(False)}
        >>> chain = pg.gfn.environment(
        ...     init,
        ...     forward_mask=lambda s: jnp.stack([s["n"] < 3, jnp.bool_(True)]) & ~s["stopped"],
        ...     step=lambda s, a: {"n": s["n"] + (a == 0), "stopped": s["stopped"] | (a == 1)},
        ...     backward_mask=lambda s: jnp.stack([(s["n"] > 0) & ~s["stopped"], s["stopped"]]),
        ...     backward_step=lambda s, b: {"n": s["n"] - (b == 0), "stopped": s["stopped"] & (b == 0)},
        ...     is_terminal=lambda s: s["stopped"],
        ...     log_reward=lambda s: jnp.log1p(s["n"].astype(float)),
        ...     num_actions=2, num_backward_actions=2, max_steps=4, exit_action=1)
        >>> int(chain.backward_action(init, 0)), chain.features(init).shape
        (0, (2,))
    """
    where = f"environment {name!r}"
    num_actions = static_int(num_actions, "num_actions", where)
    num_backward_actions = static_int(num_backward_actions, "num_backward_actions", where)
    max_steps = static_int(max_steps, "max_steps", where)
    if exit_action is not None:
        exit_action = static_int(exit_action, "exit_action", where, minimum=0)
        if exit_action >= num_actions:
            raise SettingError(f"{where}: exit_action={exit_action} is not below num_actions={num_actions}")
    listing = (num_states, all_states, state_index)
    if any(x is not None for x in listing) and not all(x is not None for x in listing):
        raise SettingError(f"{where}: give all of num_states, all_states and state_index, or none")
    if num_states is not None:
        num_states = static_int(num_states, "num_states", where)
    initial_state = jax.tree.map(jnp.asarray, initial_state)
    features = features if features is not None else _flat_features
    if backward_action is None:
        backward_action = _search_backward_action(step, backward_mask, backward_step, num_backward_actions)
    if forward_action is None:
        forward_action = _search_forward_action(step, forward_mask, backward_step, num_actions)

    state_spec = _spec(initial_state)
    structure = jax.tree.structure(initial_state)
    action = jax.ShapeDtypeStruct((), jnp.int32)

    def mask_check(fn, label, count, what):
        mask = _eval(fn, label, where, initial_state)
        if jnp.ndim(mask) != 1 or jnp.dtype(mask.dtype) != jnp.bool_:
            _check_output(label, where, mask, (count,), "bool")
        if mask.shape[0] != count:
            raise SettingError(f"{where}: {label} returns {mask.shape[0]} entries but {what}={count}; "
                               "the mask has one entry per action")

    mask_check(forward_mask, "forward_mask", num_actions, "num_actions")
    mask_check(backward_mask, "backward_mask", num_backward_actions, "num_backward_actions")
    _check_output("is_terminal", where, _eval(is_terminal, "is_terminal", where, initial_state), (), "bool")
    _check_output("log_reward", where, _eval(log_reward, "log_reward", where, initial_state), (), "float")
    feature_shape = _eval(features, "features", where, initial_state)
    if jnp.ndim(feature_shape) != 1:
        raise ArgumentError(f"{where}: features returns shape {tuple(feature_shape.shape)}, expected a vector")
    _check_output("features", where, feature_shape, tuple(feature_shape.shape), "float")
    for label, fn in (("step", step), ("backward_step", backward_step)):
        out = _eval(fn, label, where, initial_state, action)
        if jax.tree.structure(out) != structure or _spec(out) != state_spec:
            raise ArgumentError(
                f"{where}: {label} returns a state of structure/shapes {_describe(out)}, but the initial "
                f"state is {_describe(initial_state)}; a step must keep the state's structure, shapes and dtypes"
            )
    for label, fn in (("backward_action", backward_action), ("forward_action", forward_action)):
        _check_output(label, where, _eval(fn, label, where, initial_state, action), (), "int")
    if state_index is not None:
        _check_output("state_index", where, _eval(state_index, "state_index", where, initial_state), (), "int")
    return Environment(
        initial_state, forward_mask, step, backward_mask, backward_step, is_terminal, log_reward, features,
        backward_action, forward_action, num_actions, num_backward_actions, max_steps, exit_action,
        num_states, all_states, state_index, name,
    )


def _eval(fn, label, where, *args):
    try:
        return jax.eval_shape(fn, *args)
    except (TypeError, ValueError, IndexError) as err:
        raise ArgumentError(f"{where}: {label} fails on the initial state: {err}") from err


def _describe(tree) -> str:
    return str(jax.tree.map(lambda s: f"{jnp.dtype(s.dtype).name}{list(s.shape)}", tree))


def _format_state(states, i: int) -> str:
    return str(jax.tree.map(lambda x: np.asarray(x[i]).tolist(), states))


def check_environment(env: Environment) -> None:
    """Check a listable environment's definition on every state, eagerly.

    Checks that ``state_index`` numbers ``all_states()`` as ``0..num_states-1``; that every
    non-terminal state has a valid action and every state but ``s_0`` a valid backward
    action (``s_0`` none); that each valid action leads to a listed state, whose
    ``backward_action`` is valid there and leads back (and ``forward_action`` inverts it);
    that terminal log rewards are finite; and that no trajectory is longer than ``max_steps``.

    Args:
      env: an environment with ``all_states`` and ``state_index``.

    Raises:
      SettingError: the environment cannot be listed.
      ValidationError: the first failed check, naming the state and the action.

    Example:
        >>> import probgen as pg
        >>> pg.gfn.check_environment(pg.gfn.hypergrid(dim=2, height=3))  # passes silently
    """
    where = f"check_environment({env.name!r})"
    if env.all_states is None:
        raise SettingError(f"{where}: the environment cannot be listed (no all_states / state_index)")
    states = env.all_states()
    n = env.num_states
    index = np.asarray(jax.vmap(env.state_index)(states))
    if index.shape != (n,) or not np.array_equal(index, np.arange(n)):
        bad = int(np.argmax(index != np.arange(n))) if index.shape == (n,) else 0
        raise ValidationError(f"{where}: state_index does not number all_states() as 0..{n - 1} "
                              f"(state {_format_state(states, bad)} has index {index[bad] if index.size else None})")
    initial = int(env.state_index(env.initial_state))

    @jax.jit
    def local(s):
        forward = env.forward_mask(s)
        backward = env.backward_mask(s)
        actions = jnp.arange(env.num_actions)
        children = jax.vmap(env.step, in_axes=(None, 0))(s, actions)
        child_index = jax.vmap(env.state_index)(children)
        back = jax.vmap(env.backward_action, in_axes=(None, 0))(s, actions)
        back_valid = jax.vmap(lambda c, b: env.backward_mask(c)[jnp.clip(b, 0, env.num_backward_actions - 1)]
                              & (b >= 0) & (b < env.num_backward_actions))(children, back)
        returns = jax.vmap(lambda c, b: tree_equal(env.backward_step(c, b), s))(children, back)
        again = jax.vmap(env.forward_action)(children, back) == actions
        return (env.is_terminal(s), forward, backward, child_index, back_valid, returns, again,
                env.log_reward(s))

    terminal, forward, backward, child_index, back_valid, returns, again, log_r = map(
        np.asarray, jax.vmap(local)(states))
    for i in range(n):
        label = f"state {_format_state(states, i)}"
        if not terminal[i] and not forward[i].any():
            raise ValidationError(f"{where}: {label} is not terminal but has no valid forward action")
        if i == initial and backward[i].any():
            raise ValidationError(f"{where}: the initial state has a valid backward action")
        if i != initial and not backward[i].any():
            raise ValidationError(f"{where}: {label} is not the initial state but has no valid backward action")
        if terminal[i]:
            if not np.isfinite(log_r[i]):
                raise ValidationError(f"{where}: terminal {label} has log_reward {log_r[i]}")
            continue
        for a in np.flatnonzero(forward[i]):
            if not 0 <= child_index[i, a] < n:
                raise ValidationError(f"{where}: action {a} at {label} leads to an unlisted state")
            if not back_valid[i, a] or not returns[i, a]:
                raise ValidationError(f"{where}: action {a} at {label}: its backward_action is not valid at the "
                                      "child or does not lead back to the state")
            if not again[i, a]:
                raise ValidationError(f"{where}: action {a} at {label}: forward_action does not invert "
                                      "backward_action")
    # No trajectory longer than max_steps: the non-terminal states reachable in exactly t steps.
    reach = np.zeros(n, bool)
    reach[initial] = True
    for _ in range(env.max_steps):
        moves = forward & reach[:, None] & ~terminal[:, None]
        reach = np.zeros(n, bool)
        reach[child_index[moves]] = True
    if (reach & ~terminal).any():
        raise ValidationError(f"{where}: a trajectory is longer than max_steps={env.max_steps} (state "
                              f"{_format_state(states, int(np.argmax(reach & ~terminal)))} is reached after "
                              f"{env.max_steps} steps and is not terminal)")


# -- the hypergrid -------------------------------------------------------------------------


def hypergrid(dim: int = 2, height: int = 8, *, r0: float = 1e-3, r1: float = 0.5, r2: float = 2.0) -> Environment:
    """The hypergrid of Bengio et al. (2021): walk on ``{0..height-1}^dim`` from the origin.

    Action ``d < dim`` increments coordinate ``d`` (valid below ``height - 1``); action
    ``dim`` exits, making the current cell the terminal object. With ``a_d = |x_d /
    (height - 1) - 0.5|`` the reward is

        R(x) = r0 + r1 * prod_d 1[0.25 < a_d] + r2 * prod_d 1[0.3 < a_d < 0.4],

    (high-reward regions near the ``2^dim`` corners, each with a sharper mode inside),
    evaluated with exact integer arithmetic on ``x``. The state is ``{"position":
    int32[dim], "stopped": bool}``; backward action ``d < dim`` decrements ``d``, and
    backward action ``dim`` undoes the exit. Features are the one-hot encodings of the
    coordinates (``dim * height`` floats). States are listable up to ``2 * height^dim <
    2^31``.

    Args:
      dim: the number of dimensions.
      height: the side length (at least 2).
      r0, r1, r2: the reward levels (``r0 > 0``, so every log reward is finite).

    Returns:
      An :class:`Environment` with ``max_steps = dim * (height - 1) + 1``.

    Reference: Bengio et al., "Flow Network based Generative Models for Non-Iterative
    Diverse Candidate Generation", NeurIPS 2021; the same reward as torchgfn's "original".

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> env = pg.gfn.hypergrid(dim=2, height=8)
        >>> corner = {"position": jnp.array([1, 6], jnp.int32), "stopped": jnp.bool_(True)}
        >>> round(float(jnp.exp(env.log_reward(corner))), 4)   # r0 + r1 + r2
        2.501
    """
    dim = static_int(dim, "dim", "hypergrid")
    height = static_int(height, "height", "hypergrid", minimum=2)
    if not (r0 > 0 and r1 >= 0 and r2 >= 0):
        raise SettingError(f"hypergrid: need r0 > 0 and r1, r2 >= 0, got r0={r0}, r1={r1}, r2={r2}")
    span = height - 1

    def forward_mask(state):
        return jnp.concatenate([state["position"] < span, jnp.ones(1, bool)]) & ~state["stopped"]

    def step(state, action):
        return {"position": state["position"] + jax.nn.one_hot(action, dim, dtype=jnp.int32),
                "stopped": state["stopped"] | (action == dim)}

    def backward_mask(state):
        stopped = state["stopped"]
        return jnp.concatenate([(state["position"] > 0) & ~stopped, stopped[None]])

    def backward_step(state, action):
        return {"position": state["position"] - jax.nn.one_hot(action, dim, dtype=jnp.int32),
                "stopped": state["stopped"] & (action != dim)}

    def log_reward(state):
        # |x/(H-1) - 1/2| compared in integers: c = |2x - (H-1)| = 2 (H-1) a.
        c = jnp.abs(2 * state["position"] - span)
        outer = jnp.all(2 * c > span)
        band = jnp.all((5 * c > 3 * span) & (5 * c < 4 * span))
        dtype = default_float()
        reward = r0 + r1 * outer.astype(dtype) + r2 * band.astype(dtype)
        return jnp.log(reward)

    def features(state):
        return jax.nn.one_hot(state["position"], height, dtype=default_float()).reshape(-1)

    def same(state, action):
        return jnp.asarray(action, jnp.int32)

    listable = 2 * height ** dim < 2 ** 31
    strides = jnp.asarray([height ** d for d in range(dim)], jnp.int32)

    def state_index(state):
        return jnp.sum(state["position"] * strides) + state["stopped"].astype(jnp.int32) * height ** dim

    def all_states():
        cells = np.arange(height ** dim)
        position = (cells[:, None] // np.asarray([height ** d for d in range(dim)])) % height
        position = np.concatenate([position, position]).astype(np.int32)
        stopped = np.repeat(np.array([False, True]), height ** dim)
        return {"position": jnp.asarray(position), "stopped": jnp.asarray(stopped)}

    initial = {"position": jnp.zeros(dim, jnp.int32), "stopped": jnp.asarray(False)}
    return environment(
        initial, forward_mask=forward_mask, step=step, backward_mask=backward_mask,
        backward_step=backward_step, is_terminal=lambda s: s["stopped"], log_reward=log_reward,
        num_actions=dim + 1, num_backward_actions=dim + 1, max_steps=dim * span + 1, features=features,
        backward_action=same, forward_action=same, exit_action=dim,
        num_states=2 * height ** dim if listable else None,
        all_states=all_states if listable else None, state_index=state_index if listable else None,
        name=f"hypergrid(dim={dim}, height={height})",
    )

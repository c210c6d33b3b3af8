"""Set generation: choose a subset of ``n`` items one element at a time, then exit.

A discrete energy-based environment: the reward of a set ``x`` (a 0/1 vector) is
``exp(-E(x))`` for a user-given energy ``E``, e.g. the Ising form of :func:`ising_energy`.
The state graph is a DAG with many paths to each set (``|x|!`` orders), so the backward
policy matters, as in the discrete energy-based models of Zhang et al. (2022).

Reference: Zhang et al., "Generative Flow Networks for Discrete Probabilistic Modeling",
ICML 2022.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core.checks import static_int
from probgen.core.errors import ArgumentError
from probgen.gfn.envs import Environment, default_float, environment

_MAX_LISTED_ITEMS = 20


def ising_energy(coupling: jax.Array, field: jax.Array | None = None) -> Callable[[jax.Array], jax.Array]:
    """The Ising energy ``E(x) = -s^T J s / 2 - h^T s`` of spins ``s = 2 x - 1``, for a 0/1 vector ``x``.

    Args:
      coupling: ``J``, a symmetric ``(n, n)`` matrix (its diagonal adds a constant).
      field: ``h``, shape ``(n,)``; default zero.

    Returns:
      ``energy(x) -> scalar`` for ``x`` of shape ``(n,)`` (0/1, any float dtype).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> energy = pg.gfn.ising_energy(jnp.array([[0.0, 1.0], [1.0, 0.0]]))
        >>> float(energy(jnp.array([1.0, 1.0]))), float(energy(jnp.array([1.0, 0.0])))
        (-1.0, 1.0)
    """
    coupling = jnp.asarray(coupling)
    if coupling.ndim != 2 or coupling.shape[0] != coupling.shape[1]:
        raise ArgumentError(f"ising_energy: coupling must be a square matrix, got shape {tuple(coupling.shape)}")
    n = coupling.shape[0]
    if field is not None and jnp.shape(field) != (n,):
        raise ArgumentError(f"ising_energy: field must have shape ({n},), got {tuple(jnp.shape(field))}")

    def energy(x):
        spins = 2 * x - 1
        value = -0.5 * spins @ (coupling @ spins)
        return value if field is None else value - jnp.asarray(field) @ spins

    return energy


def set_generation(
    num_items: int, energy: Callable[[jax.Array], jax.Array], *, max_size: int | None = None
) -> Environment:
    """Choose a subset of ``num_items`` items one element at a time; ``R(x) = exp(-energy(x))``.

    The state is ``{"members": bool[num_items], "stopped": bool}``. Action ``i <
    num_items`` adds item ``i`` (valid when it is not in the set and the set is smaller
    than ``max_size``); action ``num_items`` exits. Backward action ``i`` removes item
    ``i``, backward action ``num_items`` undoes the exit. ``energy`` receives the
    membership vector as 0/1 floats of the default dtype and is also read at non-terminal
    states (by forward-looking and modified detailed balance). Features are the
    membership vector. States are listable up to 20 items.

    Args:
      num_items: ``n``.
      energy: ``x -> scalar`` for ``x`` of shape ``(n,)``.
      max_size: the largest set (default ``n``).

    Returns:
      An :class:`Environment` with ``max_steps = max_size + 1``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> env = pg.gfn.set_generation(3, lambda x: -jnp.sum(x))   # R(x) = e^{|x|}
        >>> full = {"members": jnp.ones(3, bool), "stopped": jnp.bool_(True)}
        >>> float(env.log_reward(full)), env.num_states, env.max_steps
        (3.0, 16, 4)
    """
    num_items = static_int(num_items, "num_items", "set_generation")
    max_size = num_items if max_size is None else static_int(max_size, "max_size", "set_generation")
    if max_size > num_items:
        raise ArgumentError(f"set_generation: max_size={max_size} is larger than num_items={num_items}")

    def forward_mask(state):
        members, stopped = state["members"], state["stopped"]
        room = jnp.sum(members) < max_size
        return jnp.concatenate([~members & room, jnp.ones(1, bool)]) & ~stopped

    def step(state, action):
        return {"members": state["members"] | (jnp.arange(num_items) == action),
                "stopped": state["stopped"] | (action == num_items)}

    def backward_mask(state):
        stopped = state["stopped"]
        return jnp.concatenate([state["members"] & ~stopped, stopped[None]])

    def backward_step(state, action):
        return {"members": state["members"] & (jnp.arange(num_items) != action),
                "stopped": state["stopped"] & (action != num_items)}

    def log_reward(state):
        return -jnp.asarray(energy(state["members"].astype(default_float())))

    def same(state, action):
        return jnp.asarray(action, jnp.int32)

    listable = num_items <= _MAX_LISTED_ITEMS
    powers = jnp.asarray([1 << i for i in range(num_items)], jnp.int32) if listable else None

    def state_index(state):
        return jnp.sum(state["members"] * powers) + state["stopped"].astype(jnp.int32) * (1 << num_items)

    def all_states():
        codes = np.arange(1 << num_items)
        # Sets larger than max_size are listed too; they are unreachable (evaluation skips them).
        members = (codes[:, None] >> np.arange(num_items)) & 1
        members = np.concatenate([members, members]).astype(bool)
        stopped = np.repeat(np.array([False, True]), 1 << num_items)
        return {"members": jnp.asarray(members), "stopped": jnp.asarray(stopped)}

    initial = {"members": jnp.zeros(num_items, bool), "stopped": jnp.asarray(False)}
    return environment(
        initial, forward_mask=forward_mask, step=step, backward_mask=backward_mask,
        backward_step=backward_step, is_terminal=lambda s: s["stopped"], log_reward=log_reward,
        num_actions=num_items + 1, num_backward_actions=num_items + 1, max_steps=max_size + 1,
        features=lambda s: s["members"].astype(default_float()), backward_action=same, forward_action=same,
        exit_action=num_items, num_states=(2 << num_items) if listable else None,
        all_states=all_states if listable else None, state_index=state_index if listable else None,
        name=f"set_generation(num_items={num_items})",
    )

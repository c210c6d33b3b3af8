"""A replay buffer as arrays: fixed capacity, first in first out, pure ``add`` and ``sample``.

The buffer is a NamedTuple of arrays (the stored items with a leading capacity axis, the
insert position and the fill count), so it passes through ``jit``, ``lax.scan`` and
``vmap`` and is checkpointed like any pytree. Items are any pytree with a leading batch
axis, typically a :class:`~probgen.gfn.trajectories.Trajectories` batch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.errors import ArgumentError, SettingError
from probgen.core.validation import check


class ReplayBuffer(NamedTuple):
    """Items in fixed-capacity arrays; ``add`` writes at ``position`` and wraps around.

    Attributes:
      items: the stored pytree; every leaf has a leading axis of size ``capacity``. Slots
        ``0 .. size - 1`` hold items (all of them once the buffer has wrapped).
      position: int32, the slot the next item goes to.
      size: int32, the number of filled slots (at most ``capacity``).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> buffer = pg.gfn.replay_buffer(jnp.zeros((1, 2)), capacity=4)
        >>> buffer.capacity, int(buffer.size)
        (4, 0)
    """

    items: Any
    position: jax.Array
    size: jax.Array

    @property
    def capacity(self) -> int:
        """The number of slots (static)."""
        return jax.tree.leaves(self.items)[0].shape[0]


def _leading(tree: Any, where: str) -> int:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ArgumentError(f"{where}: the items hold no arrays")
    shapes = [tuple(leaf.shape) if hasattr(leaf, "shape") else jnp.shape(leaf) for leaf in leaves]
    sizes = {shape[0] if shape else None for shape in shapes}
    if None in sizes or len(sizes) != 1:
        raise ArgumentError(f"{where}: every leaf of the items needs the same leading (batch) axis, got shapes "
                            f"{shapes}")
    return sizes.pop()


def replay_buffer(example: Any, capacity: int) -> ReplayBuffer:
    """An empty buffer for items shaped like ``example`` (a batch: leading axis of any size).

    Args:
      example: a batch of items (e.g. a ``Trajectories`` batch); only its structure, the
        shapes past the leading axis and the dtypes are used (a ``jax.eval_shape`` result works).
      capacity: the number of slots.

    Returns:
      A :class:`ReplayBuffer` of zeros, ``position = size = 0``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> pg.gfn.replay_buffer({"x": jnp.zeros((8, 3))}, 100).items["x"].shape
        (100, 3)
    """
    capacity = static_int(capacity, "capacity", "replay_buffer")
    _leading(example, "replay_buffer")
    items = jax.tree.map(lambda leaf: jnp.zeros((capacity,) + tuple(leaf.shape[1:]), leaf.dtype), example)
    zero = jnp.zeros((), jnp.int32)
    return ReplayBuffer(items, zero, zero)


def replay_add(buffer: ReplayBuffer, items: Any) -> ReplayBuffer:
    """The buffer with a batch of ``items`` written at ``position`` onwards (wrapping: oldest out first).

    Args:
      buffer: a :class:`ReplayBuffer`.
      items: a batch shaped like the buffer's items, with at most ``capacity`` entries.

    Returns:
      The new buffer (the old one is unchanged).

    Raises:
      ArgumentError: the items' structure, shapes or dtypes differ from the buffer's.
      SettingError: more items than slots.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> buffer = pg.gfn.replay_buffer(jnp.zeros(1, jnp.int32), capacity=3)
        >>> buffer = pg.gfn.replay_add(buffer, jnp.array([1, 2], jnp.int32))
        >>> buffer = pg.gfn.replay_add(buffer, jnp.array([3, 4], jnp.int32))
        >>> buffer.items.tolist(), int(buffer.position), int(buffer.size)
        ([4, 2, 3], 1, 3)
    """
    if not isinstance(buffer, ReplayBuffer):
        raise ArgumentError(f"replay_add: expected a ReplayBuffer, got {type(buffer).__name__}")
    count = _leading(items, "replay_add")
    capacity = buffer.capacity
    if count > capacity:
        raise SettingError(f"replay_add: {count} items do not fit a buffer of capacity {capacity}")
    stored = [(tuple(leaf.shape[1:]), jnp.dtype(leaf.dtype)) for leaf in jax.tree.leaves(buffer.items)]
    given = [(tuple(jnp.shape(leaf)[1:]), jnp.dtype(jnp.result_type(leaf))) for leaf in jax.tree.leaves(items)]
    if jax.tree.structure(items) != jax.tree.structure(buffer.items) or stored != given:
        raise ArgumentError(f"replay_add: the items (per item: {given}) do not match the buffer's (per item: {stored})")
    slots = (buffer.position + jnp.arange(count, dtype=jnp.int32)) % capacity
    new_items = jax.tree.map(lambda old, new: old.at[slots].set(new), buffer.items, items)
    return ReplayBuffer(new_items, (buffer.position + count) % capacity,
                        jnp.minimum(buffer.size + count, capacity).astype(jnp.int32))


def replay_sample(buffer: ReplayBuffer, key: jax.Array, num_items: int, log_weights: jax.Array | None = None) -> Any:
    """Draw ``num_items`` stored items with replacement: uniformly, or in proportion to ``exp(log_weights)``.

    Args:
      buffer: a non-empty :class:`ReplayBuffer`.
      key: PRNG key.
      num_items: how many (static).
      log_weights: optional ``(capacity,)`` log priorities of the slots (e.g. the stored
        trajectories' log rewards, for reward-prioritized replay); empty slots are skipped.

    Returns:
      A batch of ``num_items`` items (leading axis ``num_items``).

    Under ``pg.validate``, sampling from an empty buffer raises; without it, the result is
    the zero items of the empty slots.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> buffer = pg.gfn.replay_add(pg.gfn.replay_buffer(jnp.zeros(1), 10), jnp.array([5.0, 7.0]))
        >>> drawn = pg.gfn.replay_sample(buffer, jax.random.key(0), 6)
        >>> sorted(set(drawn.tolist())) in ([5.0], [7.0], [5.0, 7.0])
        True
    """
    if not isinstance(buffer, ReplayBuffer):
        raise ArgumentError(f"replay_sample: expected a ReplayBuffer, got {type(buffer).__name__}")
    num_items = static_int(num_items, "num_items", "replay_sample")
    check(buffer.size > 0, "replay_sample: the buffer is empty (add items before sampling)")
    capacity = buffer.capacity
    if log_weights is None:
        slots = jax.random.randint(key, (num_items,), 0, jnp.maximum(buffer.size, 1))
    else:
        if jnp.shape(log_weights) != (capacity,):
            raise ArgumentError(f"replay_sample: log_weights must have shape ({capacity},), got "
                                f"{tuple(jnp.shape(log_weights))}")
        filled = jnp.arange(capacity) < buffer.size
        logits = jnp.where(filled, log_weights, -jnp.inf)
        slots = jax.random.categorical(key, logits, shape=(num_items,))
    return jax.tree.map(lambda leaf: leaf[slots], buffer.items)

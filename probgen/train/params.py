"""Parameters that are modules: the arrays train, everything else rides along unchanged.

``pg.fit`` and ``pg.sweep`` take any pytree as parameters: a dict of arrays, a flax
``nnx.Module`` (a pytree of its arrays) or an equinox ``Module``, whose leaves also hold
plain Python objects (activation functions, static settings). Only the array leaves (and
Python numbers) are parameters: they are differentiated, updated by the optimizer, carried
through ``lax.scan`` and checkpointed; the other leaves are held aside and put back into
the same places, so the loss sees the module as it was given.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, NamedTuple

import jax
import numpy as np


class Static(NamedTuple):
    """Where the non-array leaves of a parameter pytree were, and what they were."""

    treedef: Any
    is_array: tuple[bool, ...]
    others: tuple[Any, ...]


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, numbers.Number))


def split_params(params: Any) -> tuple[Any, Static | None]:
    """``(arrays, static)``: ``params`` itself and ``None`` when every leaf is an array.

    Otherwise ``arrays`` is the list of array leaves (what the optimizer sees) and
    ``static`` holds the rest; :func:`merge_params` rebuilds ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from probgen.train.params import merge_params, split_params
        >>> module = {"w": jnp.ones(2), "activation": jnp.tanh}
        >>> arrays, static = split_params(module)
        >>> len(arrays), merge_params(arrays, static)["activation"] is jnp.tanh
        (1, True)
    """
    leaves, treedef = jax.tree.flatten(params)
    is_array = tuple(_is_array(leaf) for leaf in leaves)
    if all(is_array):
        return params, None
    arrays = [leaf for leaf, keep in zip(leaves, is_array) if keep]
    others = tuple(leaf for leaf, keep in zip(leaves, is_array) if not keep)
    return arrays, Static(treedef, is_array, others)


def merge_params(arrays: Any, static: Static | None) -> Any:
    """Inverse of :func:`split_params` (``arrays`` may be new values of the same shapes).

    Example:
        >>> from probgen.train.params import merge_params
        >>> merge_params({"w": 1.0}, None)
        {'w': 1.0}
    """
    if static is None:
        return arrays
    values, others = iter(arrays), iter(static.others)
    leaves = [next(values) if keep else next(others) for keep in static.is_array]
    return jax.tree.unflatten(static.treedef, leaves)


def with_static(loss_fn: Any, static: Static | None) -> Any:
    """``loss_fn`` taking the array leaves in place of the whole module (itself when static is None).

    A ``functools.partial`` of a module-level function, so that rebuilding it for the same
    loss and module finds the program compiled before (see :mod:`probgen.train.programs`).
    """
    if static is None:
        return loss_fn
    return functools.partial(_merged_loss, loss_fn, static)


def _merged_loss(loss_fn: Any, static: Static, arrays: Any, key: Any, batch: Any) -> Any:
    return loss_fn(merge_params(arrays, static), key, batch)

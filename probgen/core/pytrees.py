"""Pytrees whose leaves are not all arrays: modules (an equinox ``Module`` holds its
activation functions among its leaves). The arrays are what JAX traces, differentiates and
stacks; the other leaves are held aside, as static data, and put back in their places.
"""

from __future__ import annotations

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
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, numbers.Number)) or (
        hasattr(leaf, "shape") and hasattr(leaf, "dtype"))  # jax.ShapeDtypeStruct (eval_shape)


def split_arrays(params: Any) -> tuple[Any, Static | None]:
    """``(arrays, static)``: ``params`` itself and ``None`` when every leaf is an array.

    Otherwise ``arrays`` is the list of array leaves (what the optimizer sees) and
    ``static`` holds the rest; :func:`merge_arrays` rebuilds ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from probgen.core.pytrees import merge_arrays, split_arrays
        >>> module = {"w": jnp.ones(2), "activation": jnp.tanh}
        >>> arrays, static = split_arrays(module)
        >>> len(arrays), merge_arrays(arrays, static)["activation"] is jnp.tanh
        (1, True)
    """
    leaves, treedef = jax.tree.flatten(params)
    is_array = tuple(_is_array(leaf) for leaf in leaves)
    if all(is_array):
        return params, None
    arrays = [leaf for leaf, keep in zip(leaves, is_array) if keep]
    others = tuple(leaf for leaf, keep in zip(leaves, is_array) if not keep)
    return arrays, Static(treedef, is_array, others)


def merge_arrays(arrays: Any, static: Static | None) -> Any:
    """Inverse of :func:`split_arrays` (``arrays`` may be new values of the same shapes).

    Example:
        >>> from probgen.core.pytrees import merge_arrays
        >>> merge_arrays({"w": 1.0}, None)
        {'w': 1.0}
    """
    if static is None:
        return arrays
    values, others = iter(arrays), iter(static.others)
    leaves = [next(values) if keep else next(others) for keep in static.is_array]
    return jax.tree.unflatten(static.treedef, leaves)

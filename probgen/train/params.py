"""Parameters that are modules: the arrays train, everything else rides along unchanged.

``pg.fit`` and ``pg.sweep`` take any pytree as parameters: a dict of arrays, a flax
``nnx.Module`` (a pytree of its arrays) or an equinox ``Module``, whose leaves also hold
plain Python objects (activation functions, static settings). Only the array leaves (and
Python numbers) are parameters: they are differentiated, updated by the optimizer, carried
through ``lax.scan`` and checkpointed; the other leaves are held aside and put back into
the same places (:mod:`probgen.core.pytrees`), so the loss sees the module as it was given.
"""

from __future__ import annotations

import functools
from typing import Any

from probgen.core.pytrees import Static, merge_arrays as merge_params, split_arrays as split_params

__all__ = ["merge_params", "split_params", "with_static"]


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

"""Drivers that compile themselves: one ``jax.jit`` program per static configuration, cached.

A one-shot driver (``pg.mc.smc``, ``pg.mc.tempered_smc``, ``pg.mc.importance_sampling``,
``pg.mc.run_mcmc``) called eagerly would dispatch every operation of its loop one by one
(seconds to minutes); jitted it runs in milliseconds. :func:`compiled` builds the jitted
program from the driver's static settings (the model object, sizes, option strings) and
caches it on them, so a second call with new data, arguments or key reuses the compiled
code. Settings that cannot be hashed (an array where a float is expected) still compile,
uncached.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax


@functools.lru_cache(maxsize=64)
def _cached(build: Callable, static: tuple) -> Callable:
    return jax.jit(build(*static))


def compiled(build: Callable, *static) -> Callable:
    """``jax.jit(build(*static))``, cached on ``(build, static)`` when they are hashable.

    ``build(*static)`` returns the function to compile; its arguments (observations, keys,
    model arguments) are traced, so new values reuse the program.

    Example:
        >>> import jax.numpy as jnp
        >>> from probgen.core.compiled import compiled
        >>> def build(power):
        ...     return lambda x: x ** power
        >>> compiled(build, 2) is compiled(build, 2), float(compiled(build, 3)(jnp.asarray(2.0)))
        (True, 8.0)
    """
    try:
        hash(static)
    except TypeError:
        return jax.jit(build(*static))
    return _cached(build, static)

"""Drivers that compile themselves: one ``jax.jit`` program per static configuration, cached.

A one-shot driver (``pg.mc.smc``, ``pg.mc.tempered_smc``, ``pg.mc.importance_sampling``,
``pg.mc.run_mcmc``) called eagerly would dispatch every operation of its loop one by one
(seconds to minutes); jitted it runs in milliseconds. :func:`compiled` builds the jitted
program from the driver's static settings (the model object, sizes, option strings) and
caches it on them, so a second call with new data, arguments or key reuses the compiled
code. Settings that cannot be hashed (an array where a float is expected) still compile,
uncached. :func:`compiled_call` is the entry the drivers use: it also keys the program on
whether :func:`pg.validate` is tracing (a validated program carries run-time checks a plain
one lacks) and treats Python ints, bools and strings among the arguments as constants.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable

import jax
import numpy as np

from probgen.core import handlers


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


def _is_traced(leaf: Any) -> bool:
    """Arrays and Python floats are traced arguments; ints, bools, strings, callables are constants."""
    if isinstance(leaf, (jax.Array, np.ndarray, np.generic)) or (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
        return True
    return isinstance(leaf, numbers.Number) and not isinstance(leaf, numbers.Integral)


def _with_constants(program: Callable, static: tuple, treedef: Any, constants: tuple, is_traced: tuple,
                    validating: bool) -> Callable:
    # ``validating`` only keys the cache: a program traced under pg.validate holds run-time
    # checks (checkify) that a plain one lacks, so the two must not share a compiled program.
    body = program(*static)

    def run(traced):
        values, others = iter(traced), iter(constants)
        leaves = [next(values) if keep else next(others) for keep in is_traced]
        return body(*jax.tree.unflatten(treedef, leaves))

    return run


def compiled_call(program: Callable, static: tuple, *dynamic: Any) -> Any:
    """``program(*static)(*dynamic)`` as one ``jax.jit`` program, compiled once per configuration.

    The program is jitted and cached by :func:`probgen.core.compiled.compiled` on
    ``(program, static)`` and on what else fixes the trace: the structure of ``dynamic``,
    its constant leaves and whether :func:`pg.validate` is tracing. Array and float leaves
    of ``dynamic`` (keys, observations, model arguments) are traced, so new values reuse the
    compiled code; Python ints, bools, strings and callables among them are compile-time
    constants (a model argument may be a length), so a new value compiles again. Under an
    outer ``jax.jit`` / ``jax.vmap`` the call is traced into the caller's program.

    Example:
        >>> import jax.numpy as jnp
        >>> from probgen.core.compiled import compiled_call
        >>> def scaled(factor):
        ...     return lambda x, power: factor * x**power
        >>> float(compiled_call(scaled, (2.0,), jnp.asarray(3.0), 2))   # power 2 is a constant
        18.0
    """
    leaves, treedef = jax.tree.flatten(dynamic)
    is_traced = tuple(_is_traced(leaf) for leaf in leaves)
    traced = [leaf for leaf, keep in zip(leaves, is_traced) if keep]
    constants = tuple(leaf for leaf, keep in zip(leaves, is_traced) if not keep)
    run = compiled(_with_constants, program, tuple(static), treedef, constants, is_traced,
                   handlers.is_validating())
    return run(traced)

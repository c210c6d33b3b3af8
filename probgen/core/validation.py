"""Opt-in run-time validation: checks that only run time can decide, named by address.

Most bad input is refused at trace time (shapes, addresses, unused constraints). Some
can only be seen in the values: a ``switch`` index out of range under ``jit``, a negative
scale computed inside the model, resampling weights that are all ``-inf``. probgen
inserts such checks only while a function is traced by :func:`validate`; otherwise
they cost nothing. Checks are built on ``jax.experimental.checkify``, so they work under
``jit``, ``vmap`` and ``lax.scan`` and report the first failure with its message.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from probgen.core import handlers
from probgen.core.errors import ProbgenError

class ValidationError(ProbgenError, ValueError):
    """A run-time check of :func:`validate` failed; the message names the culprit."""


def check(predicate: Any, message: str, **values: Any) -> None:
    """Under :func:`validate`, fail at run time with ``message`` where ``predicate`` is False.

    ``message`` may hold ``{name}`` fields filled from ``values`` (arrays) at run time.
    Outside :func:`validate` this is a no-op and adds nothing to the program.
    """
    if handlers.is_validating():
        checkify.check(jnp.all(jnp.asarray(predicate)), message, **values)


def validate(fn: Callable, *, jit: bool = True) -> Callable:
    """Run ``fn`` with probgen's run-time checks on; a failed check raises :class:`ValidationError`.

    The returned function traces ``fn`` with the checks inserted (a switch index in range,
    distribution parameters valid, resampling weights not all ``-inf`` or NaN, ...), runs
    it (jitted unless ``jit=False``) and raises the first failure, with a message naming
    the address or argument. Without ``validate`` the same code runs unchecked, at full
    speed. Wrap the outermost function (the one you would ``jax.jit``).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def model(scale):
        ...     return pg.sample("x", pg.Normal(0.0, scale))
        >>> checked = pg.validate(lambda s: model.assess({"x": 0.0}, s)[0])
        >>> round(float(checked(1.0)), 4)
        -0.9189
        >>> try:
        ...     checked(-1.0)
        ... except pg.ValidationError as e:
        ...     print(str(e).splitlines()[0])
        sample site 'x': Normal parameter 'scale' is out of its constraint (positive), got -1.0
    """

    def flagged(*args, **kwargs):
        with handlers.handle(handlers.Validating(True)):
            return fn(*args, **kwargs)

    checked = checkify.checkify(flagged, errors=checkify.user_checks)
    if jit:
        checked = jax.jit(checked)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        error, out = checked(*args, **kwargs)
        message = error.get()
        if message is not None:
            raise ValidationError(message.split(" (`check` failed)")[0])
        return out

    return wrapper

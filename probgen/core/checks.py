"""Trace-time checks of static settings, shared by every subpackage (one message style)."""

from __future__ import annotations

import numbers

from probgen.core.errors import SettingError


def static_int(value, name: str, where: str, minimum: int = 1) -> int:
    """``value`` as a Python int, or a :class:`SettingError` naming ``name`` and ``where``.

    Accepts Python and NumPy integers (``np.int64(10)``); refuses bools, floats and traced
    arrays, since counts decide shapes and must be static.

    Example:
        >>> import numpy as np
        >>> from probgen.core.checks import static_int
        >>> static_int(np.int64(10), "num_particles", "iwae")
        10
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        bound = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise SettingError(f"{where}: {name} must be {bound} (static), got {value!r}")
    return int(value)

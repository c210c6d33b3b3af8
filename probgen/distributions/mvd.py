"""Measure-valued derivative couplings, one per supported distribution family.

A coupling for a distribution with parameters ``eta`` gives, for each parameter, a
constant ``c`` and a pair of distributions ``(plus, minus)`` with
``d/d eta E_p[f] = c * (E_plus[f] - E_minus[f])``. ``pg.vi`` uses them for sites that
carry the MVD strategy. The registry is filled by :func:`register`.
"""

from __future__ import annotations

from typing import Any, Callable

_REGISTRY: dict[str, Callable[[Any], Any]] = {}


def register(name: str, coupling: Callable[[Any], Any]) -> None:
    """Register the MVD coupling builder for distributions whose class name is ``name``."""
    _REGISTRY[name] = coupling


def coupling_for(dist: Any):
    """The coupling builder for ``dist``, or None when MVD is not defined for it."""
    for cls in type(dist).__mro__:
        if cls.__name__ in _REGISTRY:
            return _REGISTRY[cls.__name__]
    return None


def supported_names() -> list[str]:
    return sorted(_REGISTRY)

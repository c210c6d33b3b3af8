"""Gradient-estimation strategies that a sample site can carry.

A strategy says how ``pg.vi.expectation`` differentiates an expectation through a
random choice. It is attached to a distribution with :func:`with_strategy` or passed
at the site, ``pg.sample("z", d, strategy=pg.REINFORCE)``; sites without one use
:func:`default_strategy`.
"""

from __future__ import annotations

import enum


class Strategy(str, enum.Enum):
    """How the gradient of an expectation flows through one random choice.

    Example:
        >>> import probgen as pg
        >>> pg.REPARAM.value
        'reparam'
    """

    REPARAM = "reparam"        # pathwise: value = T(noise; theta)
    REINFORCE = "reinforce"    # score function: f * grad log p
    ENUM = "enum"              # exact sum over a finite support
    MVD = "mvd"                # measure-valued derivative (weak derivative)
    IMPLICIT = "implicit"      # implicit reparameterization (Gamma, Beta, Dirichlet)
    PATH = "path"              # reparam with stopped parameters in log q (sticking the landing)


REPARAM = Strategy.REPARAM
REINFORCE = Strategy.REINFORCE
ENUM = Strategy.ENUM
MVD = Strategy.MVD
IMPLICIT = Strategy.IMPLICIT
PATH = Strategy.PATH

# Strategies whose value carries a pathwise gradient.
PATHWISE = frozenset({REPARAM, IMPLICIT, PATH})

"""Trace-time argument checks shared by the samplers (clear errors naming the argument)."""

from __future__ import annotations

import jax
import numpy as np

from probgen.core.checks import static_int
from probgen.core.choicemap import ChoiceMap, format_address
from probgen.core.errors import AddressError, ArgumentError
from probgen.core.gfi import GenerativeFunction


def check_num_particles(num_particles, where: str) -> int:
    """``num_particles`` as a Python int, or a ``SettingError`` (any integer scalar type is fine)."""
    return static_int(num_particles, "num_particles", where)


def concrete_value(value) -> np.ndarray | None:
    """The value of an array known at trace time, or None for a traced one (under ``jit``/``vmap``)."""
    try:
        return np.asarray(value)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def check_gf(gf, name: str, where: str) -> None:
    """An :class:`ArgumentError` unless ``gf`` is a generative function."""
    if not isinstance(gf, GenerativeFunction):
        raise ArgumentError(f"{where}: {name} must be a generative function (@pg.gen), got {type(gf).__name__}")


def check_proposal_covers(proposal_choices: ChoiceMap, model_choices: ChoiceMap, observations: ChoiceMap,
                          model_name: str, proposal_name: str, where: str) -> None:
    """The proposal must propose exactly the model's latent (unobserved) addresses."""
    observed = set(observations.addresses())
    latents = [a for a in model_choices.addresses() if a not in observed]
    proposed = set(proposal_choices.addresses())
    missing = [a for a in latents if a not in proposed]
    if missing:
        raise AddressError(
            f"{where}: proposal {proposal_name} does not propose the latent address(es) "
            f"{', '.join(repr(format_address(a)) for a in missing)} of {model_name}; a custom proposal "
            f"must cover every unobserved choice (it proposes: "
            f"{', '.join(format_address(a) for a in sorted(proposed)) or 'none'})"
        )
    clash = [a for a in proposed if a in observed]
    if clash:
        raise AddressError(
            f"{where}: proposal {proposal_name} proposes observed address(es) "
            f"{', '.join(repr(format_address(a)) for a in clash)}; propose latent choices only"
        )
    extra = [a for a in proposed if a not in set(model_choices.addresses())]
    if extra:
        raise AddressError(
            f"{where}: proposal {proposal_name} proposes address(es) "
            f"{', '.join(repr(format_address(a)) for a in extra)} that {model_name} does not have"
        )


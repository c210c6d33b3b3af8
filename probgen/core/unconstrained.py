"""Running a generative function with some choices in unconstrained coordinates.

Gradient-based MCMC moves every continuous latent on the real line: a site with support
``S`` holds ``x = T(u)`` where ``T = biject_to(S)`` (numpyro's bijections), and the
density of ``u`` is ``p(x) |det dT/du|``. The map is made at each site while the model runs,
so it works inside ``pg.scan``, ``pg.vmap`` and nested calls, and a support whose bounds
are other choices' values uses the bounds of the same execution.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from probgen.core import handlers
from probgen.core.choicemap import ChoiceMap, as_selection, format_address, select
from probgen.core.errors import ArgumentError, SettingError
from probgen.core.gfi import GenerativeFunction, Mode
from probgen.core.trace import Trace


def assess_unconstrained(gf: GenerativeFunction, choices, args: tuple, selection: Any,
                         inverse: bool = False) -> Trace:
    """``assess`` with the selected choices given in unconstrained coordinates.

    With ``inverse=False`` the selected values of ``choices`` are unconstrained
    coordinates: the returned trace holds their constrained values and its ``score`` is the
    log density of the unconstrained ones (the log-det Jacobians included). With
    ``inverse=True`` the values are constrained and the trace's choices at the selection
    are their unconstrained coordinates.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> from probgen.core.unconstrained import assess_unconstrained
        >>> @pg.gen
        ... def scale_model():
        ...     return pg.sample("s", pg.LogNormal(0.0, 1.0))
        >>> trace = assess_unconstrained(scale_model, {"s": 0.0}, (), pg.select("s"))
        >>> float(trace["s"]), round(float(trace.score), 4)   # s = exp(0); N(0; 0, 1) density of log s
        (1.0, -0.9189)
    """
    with handlers.handle(handlers.Unconstrained(as_selection(selection), inverse)):
        trace, _ = gf._run_constrained(None, choices, tuple(args), Mode.ASSESS)
    return trace


def to_unconstrained(gf: GenerativeFunction, choices, args: tuple, selection: Any) -> ChoiceMap:
    """The choices with the selected values mapped to unconstrained coordinates.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> from probgen.core.unconstrained import to_unconstrained
        >>> @pg.gen
        ... def scale_model():
        ...     return pg.sample("s", pg.HalfNormal(1.0))
        >>> float(to_unconstrained(scale_model, {"s": 1.0}, (), pg.select("s"))["s"])
        0.0
    """
    return assess_unconstrained(gf, choices, args, selection, inverse=True).choices


def latent_sites(model: GenerativeFunction, observations: ChoiceMap, model_args: tuple, where: str):
    """The model's latent addresses (every address ``observations`` does not fix), all continuous.

    The one latent discovery of probgen (``pg.mc.posterior``, tempered SMC's model target,
    ``pg.vi.autoguide``): ``model.generate`` is traced with ``jax.eval_shape``, so latents
    inside ``pg.scan`` / ``pg.vmap`` (with their leading axes) and nested calls are found
    without running the model.

    Returns ``(addresses, shapes, dtype)``: the latent addresses, a choice map of every
    choice's ``ShapeDtypeStruct`` and the dtype of the model's log densities.

    Raises:
      SettingError: nothing is latent. ArgumentError: a latent is discrete.

    Example:
        >>> import probgen as pg
        >>> from probgen.core.unconstrained import latent_sites
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> latent_sites(model, pg.ChoiceMap({"x": 0.5}), (), "example")[0]
        [('z',)]
    """
    trace, weight = jax.eval_shape(lambda key: model.generate(key, observations, *model_args), jax.random.key(0))
    shapes = trace.choices
    latents = [a for a in shapes.addresses() if a not in observations]
    if not latents:
        raise SettingError(f"{where}: {model.__name__} has no latent choices left once the observations are fixed")
    discrete = [a for a in latents if not jnp.issubdtype(shapes[a].dtype, jnp.floating)]
    if discrete:
        names = ", ".join(f"{format_address(a)!r} ({shapes[a].dtype})" for a in discrete)
        raise ArgumentError(
            f"{where}: latent address {names} of {model.__name__} is discrete; gradient-based inference needs "
            "continuous latents (observe them, marginalize them, or move them with pg.mc.regenerate on traces)")
    return latents, shapes, weight.dtype


def unconstrained_shapes(model: GenerativeFunction, observations: ChoiceMap, model_args: tuple,
                         latents: list) -> dict:
    """``{address: ShapeDtypeStruct}`` of each latent in unconstrained coordinates.

    A site's unconstrained shape can differ from its value's (a simplex of ``K`` entries
    has ``K - 1`` coordinates). A latent with no known bijection onto its support raises
    the site's :class:`ArgumentError` here.

    Example:
        >>> import probgen as pg
        >>> from probgen.core.unconstrained import unconstrained_shapes
        >>> import jax.numpy as jnp
        >>> @pg.gen
        ... def model():
        ...     pg.sample("w", pg.Dirichlet(jnp.ones(3)))
        >>> unconstrained_shapes(model, pg.ChoiceMap(), (), [("w",)])[("w",)].shape
        (2,)
    """
    unconstrained = jax.eval_shape(
        lambda key: to_unconstrained(model, model.generate(key, observations, *model_args)[0].choices, model_args,
                                     select(*latents)),
        jax.random.key(0))
    return {a: unconstrained[a] for a in latents}

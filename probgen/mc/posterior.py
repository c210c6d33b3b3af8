"""A model's posterior as a log density on the real line: what gradient-based MCMC samples.

:func:`posterior` fixes a generative function's observations and arguments and exposes its
continuous latents as one *position*: a dict from each latent's address (``"path/z"``)
to its value in unconstrained coordinates. Each site with support ``S`` holds
``x = biject_to(S)(u)`` and the log density of ``u`` carries the log-det Jacobian, so a
scale with a HalfCauchy or LogNormal prior, a probability on ``(0, 1)`` or a simplex needs
no hand rescaling. The map is made at each site while the model runs
(:mod:`probgen.core.unconstrained`), so latents inside ``pg.scan`` and ``pg.vmap`` are
positions like any other.

``Posterior.logdensity`` is what :func:`pg.mc.nuts`, :func:`pg.mc.hmc`,
:func:`pg.mc.window_adaptation` and :func:`pg.mc.run_mcmc` sample;
``Posterior.constrain`` turns positions back into the model's values.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from probgen.core.choicemap import ChoiceMap, as_choicemap, format_address, select
from probgen.core.errors import ArgumentError, SettingError
from probgen.core.gfi import GenerativeFunction
from probgen.core.unconstrained import (  # noqa: F401  (latent_sites: tempered SMC imports it from here)
    assess_unconstrained,
    latent_sites,
    to_unconstrained,
    unconstrained_shapes,
)
from probgen.mc.checks import check_gf

INITS = ("uniform", "prior")


class Posterior:
    """The posterior of a generative function's continuous latents given observations.

    Made by :func:`posterior`. Positions are dicts ``{address: unconstrained value}``.

    Attributes:
      model: the generative function.
      observations: the observed choices (a ``pg.ChoiceMap``).
      args: the model's arguments.
      names: the latents' addresses as strings (``"path/z"``), the position's keys.
    """

    def __init__(self, model: GenerativeFunction, observations: ChoiceMap, args: tuple,
                 addresses: dict[str, tuple[str, ...]], shapes: dict[str, jax.ShapeDtypeStruct]):
        self.model, self.observations, self.args = model, observations, args
        self._addresses = addresses
        self._selection = select(*addresses.values())
        self._shapes = shapes
        self.names = tuple(addresses)

    def _choices(self, position) -> ChoiceMap:
        if not isinstance(position, dict) or set(position) != set(self.names):
            got = sorted(position) if isinstance(position, dict) else type(position).__name__
            raise ArgumentError(
                f"posterior of {self.model.__name__}: a position is a dict with the latents "
                f"{list(self.names)} as keys, got {got}")
        return ChoiceMap({self._addresses[n]: v for n, v in position.items()}).merge(self.observations)

    def _trace(self, position):
        return assess_unconstrained(self.model, self._choices(position), self.args, self._selection)

    def logdensity(self, position) -> jax.Array:
        """Log joint density of the observations and the latents at ``position``
        (unconstrained), log-det Jacobians included: the unnormalized log posterior of ``u``.

        Example:
            >>> import jax.numpy as jnp, probgen as pg
            >>> @pg.gen
            ... def scale_model():
            ...     return pg.sample("s", pg.LogNormal(0.0, 1.0))
            >>> post = pg.mc.posterior(scale_model, {})
            >>> round(float(post.logdensity({"s": jnp.asarray(0.0)})), 4)   # N(0; 0, 1)
            -0.9189
        """
        return self._trace(position).score

    def constrain(self, position) -> dict:
        """The latents' values in the model's own coordinates (a dict like ``position``).

        Map a batch of positions with ``jax.vmap(post.constrain)``.

        Example:
            >>> import jax.numpy as jnp, probgen as pg
            >>> @pg.gen
            ... def scale_model():
            ...     return pg.sample("s", pg.HalfNormal(1.0))
            >>> post = pg.mc.posterior(scale_model, {})
            >>> float(post.constrain({"s": jnp.asarray(0.0)})["s"])
            1.0
        """
        choices = self._trace(position).choices
        return {n: choices[a] for n, a in self._addresses.items()}

    def unconstrain(self, values) -> dict:
        """The position (unconstrained coordinates) of latent ``values`` given as a dict.

        Example:
            >>> import jax.numpy as jnp, probgen as pg
            >>> @pg.gen
            ... def scale_model():
            ...     return pg.sample("s", pg.HalfNormal(1.0))
            >>> post = pg.mc.posterior(scale_model, {})
            >>> float(post.unconstrain({"s": jnp.asarray(1.0)})["s"])
            0.0
        """
        choices = to_unconstrained(self.model, self._choices(values), self.args, self._selection)
        return {n: choices[a] for n, a in self._addresses.items()}

    def init(self, key: jax.Array, strategy: str = "uniform", radius: float = 2.0) -> dict:
        """A starting position.

        Args:
          key: PRNG key.
          strategy: ``"uniform"`` (Stan's default: every unconstrained coordinate uniform on
            ``(-radius, radius)``) or ``"prior"`` (a draw from the prior, mapped to the real line).
          radius: the half-width of the uniform box.

        Example:
            >>> import jax, probgen as pg
            >>> @pg.gen
            ... def scale_model():
            ...     return pg.sample("s", pg.HalfNormal(1.0))
            >>> post = pg.mc.posterior(scale_model, {})
            >>> bool(abs(post.init(jax.random.key(0))["s"]) < 2.0)
            True
        """
        if strategy not in INITS:
            raise SettingError(f"Posterior.init: strategy must be one of {INITS}, got {strategy!r}")
        if strategy == "prior":
            trace, _ = self.model.generate(key, self.observations, *self.args)
            return self.unconstrain({n: trace.choices[a] for n, a in self._addresses.items()})
        keys = jax.random.split(key, len(self.names))
        return {n: jax.random.uniform(k, s.shape, s.dtype, -radius, radius)
                for k, (n, s) in zip(keys, self._shapes.items())}

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {s.dtype}{list(s.shape)}" for n, s in self._shapes.items())
        return f"Posterior({self.model.__name__}; {shapes})"


def posterior(model: GenerativeFunction, observations, *model_args: Any) -> Posterior:
    """The posterior over every continuous latent of ``model`` given ``observations``.

    Every address of the model that ``observations`` does not fix is a latent (inside
    ``pg.scan`` a latent holds the whole sequence). All of them must be continuous:
    gradient-based MCMC cannot move a discrete choice (observe it, or use
    ``pg.mc.regenerate`` on traces).

    Args:
      model: a generative function.
      observations: a dict or ``pg.ChoiceMap`` of observed choices.
      *model_args: the model's arguments.

    Returns:
      A :class:`Posterior`: ``logdensity(position)`` in unconstrained coordinates,
      ``constrain`` / ``unconstrain`` and ``init(key)``.

    Raises:
      ArgumentError: a latent is discrete, or a site's support has no known bijection.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def noisy_mean():
        ...     mu = pg.sample("mu", pg.Normal(0.0, 1.0))
        ...     sigma = pg.sample("sigma", pg.HalfNormal(1.0))
        ...     pg.sample("y", pg.Normal(mu, sigma))
        >>> post = pg.mc.posterior(noisy_mean, {"y": jnp.array(0.3)})
        >>> post.names
        ('mu', 'sigma')
    """
    check_gf(model, "model", "posterior")
    observations = as_choicemap(observations)
    model_args = tuple(model_args)
    latents, _, _ = latent_sites(model, observations, model_args, "posterior")
    addresses = {format_address(a): a for a in latents}
    unconstrained = unconstrained_shapes(model, observations, model_args, latents)
    shapes = {n: unconstrained[a] for n, a in addresses.items()}
    return Posterior(model, observations, model_args, addresses, shapes)


def as_logdensity(target: Posterior | Callable, where: str) -> Callable:
    """The log density a gradient-based kernel samples: a :class:`Posterior`'s or the callable itself."""
    if isinstance(target, Posterior):
        return target.logdensity
    if callable(target) and not isinstance(target, GenerativeFunction):
        return target
    raise ArgumentError(
        f"{where}: the target must be a logdensity(position) function or a pg.mc.posterior(model, "
        f"observations, *args), got {type(target).__name__}"
        + ("; wrap a model with pg.mc.posterior(model, observations, *args)"
           if isinstance(target, GenerativeFunction) else ""))

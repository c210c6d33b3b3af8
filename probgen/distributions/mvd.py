"""Measure-valued derivative couplings, one per supported distribution family.

A measure-valued derivative (MVD, a weak derivative) writes the derivative of an
expectation with respect to one distribution parameter ``eta`` as a scaled difference
of two expectations::

    d/d eta  E_{p(x; eta)}[f(x)] = c(eta) * (E_{plus}[f] - E_{minus}[f])

(Pflug 1989; Mohamed et al. 2020, "Monte Carlo Gradient Estimation in Machine
Learning", section 6). ``pg.vi`` uses these for sample sites that carry the MVD
strategy: it re-runs the program with one element of the site's value replaced by a
draw from ``plus`` and from ``minus``.

A coupling builder takes the distribution and returns a list of :class:`MVDTerm`, one per
parameter. Every array in a term has the parameter's shape (the batch shape, plus a
trailing category axis for ``Categorical``); ``group`` parameter elements share one
element of the site's value (``group = K`` for a ``K``-way Categorical, 1 otherwise).

The registry is filled at import for Normal, Bernoulli, Categorical, Poisson and
Geometric; :func:`register` adds more.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

_REGISTRY: dict[str, Callable[[Any], Any]] = {}


class MVDTerm(NamedTuple):
    """The weak derivative of one parameter, elementwise.

    Attributes:
      param: the parameter (differentiable), broadcast to its full shape.
      weight: the constant ``c`` of each element (same shape).
      plus: ``key -> array`` of the parameter's shape: for each parameter element, the
        value its site element takes under the positive part.
      minus: the same for the negative part, or None when the negative part is zero.
      group: how many consecutive (flattened) parameter elements share one value element.
    """

    param: jax.Array
    weight: jax.Array
    plus: Callable[[jax.Array], jax.Array]
    minus: Callable[[jax.Array], jax.Array] | None
    group: int = 1


def register(name: str, coupling: Callable[[Any], Any]) -> None:
    """Register the MVD coupling builder for distributions whose class name is ``name``.

    Example:
        >>> from probgen.distributions import mvd
        >>> "Normal" in mvd.supported_names()
        True
    """
    _REGISTRY[name] = coupling


def coupling_for(dist: Any):
    """The coupling builder for ``dist``, or None when MVD is not defined for it."""
    for cls in type(dist).__mro__:
        if cls.__name__ in _REGISTRY:
            return _REGISTRY[cls.__name__]
    return None


def supported_names() -> list[str]:
    return sorted(_REGISTRY)


def _batch(x: jax.Array, dist: Any) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return jnp.broadcast_to(x, tuple(dist.batch_shape))


def _normal(dist: Any) -> list[MVDTerm]:
    # d/dmu: c = 1/(sigma sqrt(2 pi)), parts mu +/- sigma * Rayleigh(1).
    # d/dsigma: c = 1/sigma, plus = mu + sigma * (double-sided Maxwell), minus = the Normal itself.
    loc, scale = _batch(dist.loc, dist), _batch(dist.scale, dist)
    shape = loc.shape
    sg_loc, sg_scale = jax.lax.stop_gradient(loc), jax.lax.stop_gradient(scale)

    def rayleigh(key):
        return jnp.sqrt(-2.0 * jnp.log1p(-jax.random.uniform(key, shape)))

    def maxwell(key):
        k1, k2 = jax.random.split(key)
        radius = jnp.sqrt(jax.random.chisquare(k1, 3.0, shape))
        sign = jnp.where(jax.random.bernoulli(k2, 0.5, shape), 1.0, -1.0)
        return sign * radius

    return [
        MVDTerm(loc, 1.0 / (sg_scale * jnp.sqrt(2.0 * jnp.pi)),
                lambda k: sg_loc + sg_scale * rayleigh(k), lambda k: sg_loc - sg_scale * rayleigh(k)),
        MVDTerm(scale, 1.0 / sg_scale,
                lambda k: sg_loc + sg_scale * maxwell(k),
                lambda k: sg_loc + sg_scale * jax.random.normal(k, shape)),
    ]


def _bernoulli(dist: Any) -> list[MVDTerm]:
    # E f = p f(1) + (1-p) f(0): d/dp = f(1) - f(0).
    probs = _batch(dist.probs, dist)
    ones = jnp.ones(probs.shape, probs.dtype)
    return [MVDTerm(probs, ones, lambda k: ones, lambda k: jnp.zeros(probs.shape, probs.dtype))]


def _categorical(dist: Any) -> list[MVDTerm]:
    # E f = sum_k p_k f(k) as a function of the (unconstrained) vector p: d/dp_k = f(k).
    probs = jnp.broadcast_to(dist.probs, tuple(dist.batch_shape) + (dist.probs.shape[-1],))
    num = probs.shape[-1]
    cats = jnp.broadcast_to(jnp.arange(num, dtype=probs.dtype), probs.shape)
    return [MVDTerm(probs, jnp.ones(probs.shape), lambda k: cats, None, group=num)]


def _poisson(dist: Any) -> list[MVDTerm]:
    # d/d rate p(x; rate) = p(x - 1; rate) - p(x; rate): plus = 1 + Poisson, minus = Poisson.
    rate = _batch(dist.rate, dist)
    sg_rate = jax.lax.stop_gradient(rate)
    return [MVDTerm(rate, jnp.ones(rate.shape),
                    lambda k: 1.0 + jax.random.poisson(k, sg_rate).astype(rate.dtype),
                    lambda k: jax.random.poisson(k, sg_rate).astype(rate.dtype))]


def _geometric_draw(key, probs):
    # failures before the first success
    u = jax.random.uniform(key, probs.shape, minval=1e-12)
    return jnp.floor(jnp.log(u) / jnp.log1p(-probs))


def _geometric(dist: Any) -> list[MVDTerm]:
    # P(x) = p (1-p)^x on {0, 1, ...}:  dP/dp = (1/p) [P(x) - x p^2 (1-p)^(x-1)], and the
    # second law is 1 + G1 + G2 for independent geometric G1, G2 (negative binomial, shifted).
    probs = _batch(dist.probs, dist)
    fixed = jax.lax.stop_gradient(probs)

    def minus(key):
        k1, k2 = jax.random.split(key)
        return 1.0 + _geometric_draw(k1, fixed) + _geometric_draw(k2, fixed)

    return [MVDTerm(probs, 1.0 / fixed, lambda k: _geometric_draw(k, fixed), minus)]


register("Normal", _normal)
register("Bernoulli", _bernoulli)
register("BernoulliProbs", _bernoulli)
register("BernoulliLogits", _bernoulli)
register("Categorical", _categorical)
register("CategoricalProbs", _categorical)
register("CategoricalLogits", _categorical)
register("Poisson", _poisson)
register("Geometric", _geometric)
register("GeometricProbs", _geometric)
register("GeometricLogits", _geometric)

"""One protocol over numpyro, distrax and probgen's own distributions.

Everything the modeling language needs from a distribution goes through the small
functions here (:func:`draw`, :func:`log_density`, :func:`value_shape`, ...), so any
``numpyro.distributions`` class, any ``distrax`` distribution, and any subclass of
:class:`Distribution` can stand at a sample site.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from probgen.distributions.strategies import (
    ENUM,
    IMPLICIT,
    MVD,
    PATH,
    PATHWISE,
    REINFORCE,
    REPARAM,
    Strategy,
)

try:  # numpyro is a declared dependency; distrax too, but keep both optional at import.
    import numpyro.distributions as _npd
except ImportError:  # pragma: no cover
    _npd = None
try:
    import distrax as _distrax
except ImportError:  # pragma: no cover
    _distrax = None


class Distribution:
    """Base class for a user-defined distribution: define ``sample`` and ``log_prob``.

    Set ``has_rsample = True`` when ``sample`` is differentiable in the parameters
    (a reparameterized draw). ``batch_shape``/``event_shape`` default to the shape
    of a draw and ``()``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> class Laplace(pg.Distribution):
        ...     has_rsample = True
        ...     def __init__(self, loc, scale):
        ...         self.loc, self.scale = loc, scale
        ...     def sample(self, key):
        ...         return self.loc + self.scale * jax.random.laplace(key, jnp.shape(self.loc))
        ...     def log_prob(self, x):
        ...         return -jnp.abs(x - self.loc) / self.scale - jnp.log(2 * self.scale)
        >>> float(Laplace(0.0, 1.0).log_prob(0.0))
        -0.6931...
    """

    has_rsample: bool = False
    #: The set of values, as a ``numpyro.distributions.constraints`` constraint; gradient-based
    #: MCMC maps it to the real line with ``biject_to``. None: undeclared (MCMC refuses the site).
    support: Any = None

    def sample(self, key: jax.Array) -> jax.Array:
        raise NotImplementedError

    def log_prob(self, value: jax.Array) -> jax.Array:
        raise NotImplementedError

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(jax.eval_shape(self.sample, jax.random.key(0)).shape)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return ()

    has_enumerate_support: bool = False

    def enumerate_support(self, expand: bool = True) -> jax.Array:
        raise NotImplementedError(f"{type(self).__name__} has no finite support to enumerate")


class WithStrategy:
    """A distribution paired with the gradient strategy its sample sites use.

    Built by :func:`with_strategy`; accepted anywhere a distribution is.
    """

    def __init__(self, base: Any, strategy: Strategy, **options: Any):
        self.base = base
        self.strategy = Strategy(strategy)
        self.options = options

    def __repr__(self) -> str:
        return f"WithStrategy({self.base!r}, {self.strategy.value})"


def with_strategy(dist: Any, strategy: Strategy | str, **options: Any) -> WithStrategy:
    """Attach a gradient-estimation strategy to a distribution.

    Args:
      dist: a numpyro, distrax or probgen distribution.
      strategy: one of ``pg.REPARAM``, ``pg.REINFORCE``, ``pg.ENUM``, ``pg.MVD``,
        ``pg.IMPLICIT``, ``pg.PATH`` (or its string name).
      **options: strategy options (e.g. ``baseline=...`` for REINFORCE).

    Returns:
      A wrapper usable at a sample site. Unsupported pairs fail at the site with an
      error naming the address.

    Example:
        >>> import probgen as pg
        >>> d = pg.with_strategy(pg.Bernoulli(probs=0.3), pg.ENUM)
        >>> d.strategy.value
        'enum'
    """
    if isinstance(dist, WithStrategy):
        dist = dist.base
    return WithStrategy(dist, Strategy(strategy), **options)


def is_distribution(obj: Any) -> bool:
    """True when ``obj`` can stand at a sample site as a primitive distribution."""
    if isinstance(obj, (Distribution, WithStrategy)):
        return True
    if _npd is not None and isinstance(obj, _npd.Distribution):
        return True
    if _distrax is not None and isinstance(obj, _distrax.Distribution):
        return True
    return False


def unwrap(dist: Any) -> tuple[Any, Strategy | None, dict]:
    """Split a possibly strategy-wrapped distribution into (base, strategy, options)."""
    if isinstance(dist, WithStrategy):
        return dist.base, dist.strategy, dist.options
    return dist, None, {}


def is_distrax(dist: Any) -> bool:
    return _distrax is not None and isinstance(dist, _distrax.Distribution)


def has_rsample(dist: Any) -> bool:
    """Whether draws from ``dist`` are differentiable in its parameters."""
    if is_distrax(dist):
        # distrax draws of continuous families are written pathwise.
        return jnp.issubdtype(_distrax_dtype(dist), jnp.floating)
    return bool(getattr(dist, "has_rsample", False))


def _distrax_dtype(dist: Any):
    return jax.eval_shape(lambda k: dist.sample(seed=k), jax.random.key(0)).dtype


def value_shape(dist: Any) -> tuple[int, ...]:
    """The shape of one draw: ``batch_shape + event_shape``."""
    return tuple(dist.batch_shape) + tuple(dist.event_shape)


def draw(dist: Any, key: jax.Array, pathwise: bool) -> jax.Array:
    """One draw from ``dist``; differentiable in the parameters iff ``pathwise``."""
    if is_distrax(dist):
        value = dist.sample(seed=key)
    elif pathwise and hasattr(dist, "rsample"):
        value = dist.rsample(key)
    else:
        value = dist.sample(key)
    return value if pathwise else jax.lax.stop_gradient(value)


# distrax families and their supports (distrax has no ``support`` attribute).
_DISTRAX_SUPPORTS = {
    "Normal": "real", "MultivariateNormalDiag": "real", "MultivariateNormalTri": "real",
    "MultivariateNormalFullCovariance": "real", "MultivariateNormalDiagPlusLowRank": "real",
    "Laplace": "real", "Logistic": "real", "Gumbel": "real",
    "Gamma": "positive", "LogStddevNormal": "real", "Beta": "unit_interval",
}


def support(dist: Any):
    """The support of ``dist`` as a numpyro constraint, or None when it is not declared.

    Example:
        >>> import probgen as pg
        >>> from probgen.distributions.protocol import support
        >>> support(pg.HalfNormal(1.0))
        Positive(lower_bound=0.0)
    """
    from numpyro.distributions import constraints

    dist = unwrap(dist)[0]
    declared = getattr(dist, "support", None)
    if isinstance(declared, constraints.Constraint):
        return declared
    if is_distrax(dist):
        name = _DISTRAX_SUPPORTS.get(type(dist).__name__)
        if name is not None:
            return getattr(constraints, name)
        if type(dist).__name__ == "Uniform":
            return constraints.interval(dist.low, dist.high)
    return None


def log_density(dist: Any, value: jax.Array) -> jax.Array:
    """Total log density of ``value``: the log-prob summed over batch dimensions."""
    return jnp.sum(dist.log_prob(value))


def default_strategy(dist: Any) -> Strategy:
    """REPARAM where draws are differentiable, REINFORCE otherwise.

    Example:
        >>> import probgen as pg
        >>> pg.default_strategy(pg.Normal(0.0, 1.0)).value, pg.default_strategy(pg.Bernoulli(probs=0.5)).value
        ('reparam', 'reinforce')
    """
    return REPARAM if has_rsample(dist) else REINFORCE


_IMPLICIT_FAMILIES = ("Gamma", "Beta", "Dirichlet", "Chi2", "Kumaraswamy")


def strategy_error(dist: Any, strategy: Strategy) -> str | None:
    """Why ``strategy`` cannot apply to ``dist``, or None when it can."""
    name = type(dist).__name__
    if strategy in (REPARAM, PATH):
        if not has_rsample(dist):
            return f"{strategy.value} needs a reparameterizable distribution; {name} has no pathwise sampler (use REINFORCE, ENUM or MVD)"
    elif strategy == IMPLICIT:
        if not any(fam in name for fam in _IMPLICIT_FAMILIES) or not has_rsample(dist):
            return f"implicit reparameterization applies to Gamma, Beta and Dirichlet families, not {name}"
    elif strategy == ENUM:
        if not getattr(dist, "has_enumerate_support", False):
            return f"enum needs a finite support to enumerate; {name} has none"
    elif strategy == MVD:
        from probgen.distributions import mvd  # local: optional registry

        if mvd.coupling_for(dist) is None:
            return f"no measure-valued derivative is defined for {name} (supported: {', '.join(mvd.supported_names())})"
    elif strategy == REINFORCE:
        return None
    return None


def is_pathwise(strategy: Strategy) -> bool:
    return strategy in PATHWISE

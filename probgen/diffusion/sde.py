"""Linear forward SDEs ``dx = f(t) x dt + g(t) dW`` and their reverse-time forms.

Every SDE here has Gaussian transition marginals ``x_t | x_0 ~ N(alpha(t) x_0, sigma(t)^2 I)``.
An :class:`SDE` is a NamedTuple of pure scalar schedules; the methods derive the drift,
diffusion, marginals, prior, reverse drift and probability-flow drift from them
(Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential
Equations").

Score functions everywhere in ``probgen.diffusion`` have the signature
``score_fn(x, t) -> array like x`` where ``x`` holds the whole particle batch
(shape ``(num_particles, *event_shape)``) and ``t`` is a scalar. Write it batched, or wrap a
per-point function with ``jax.vmap(f, in_axes=(0, None))``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.errors import SettingError

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def _bcast(coef: jax.Array, x: jax.Array) -> jax.Array:
    """Broadcast a scalar or per-particle ``(N,)`` coefficient against ``x``."""
    coef = jnp.asarray(coef)
    return coef.reshape(coef.shape + (1,) * (x.ndim - coef.ndim))


class SDE(NamedTuple):
    """A linear SDE ``dx = f(t) x dt + g(t) dW`` on ``t in [0, t_max]``.

    Fields are pure functions of a scalar (or array) time ``t``:

    Attributes:
      name: ``"vp"``, ``"vp_cosine"``, ``"ve"`` or ``"subvp"``.
      f: drift coefficient ``f(t)`` (the drift is ``f(t) * x``).
      g2: squared diffusion ``g(t)^2``.
      alpha: marginal mean scale, ``E[x_t | x_0] = alpha(t) x_0``.
      sigma: marginal standard deviation of ``x_t | x_0``.
      prior_std: standard deviation of the Gaussian prior ``N(0, prior_std^2 I)`` at ``t_max``.
      t_max: the terminal time.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> sde = pg.diffusion.vp()
        >>> mean, std = sde.marginal(jnp.ones((1, 2)), 0.5)
        >>> mean.shape, std.shape
        ((1, 2), ())
    """

    name: str
    f: Callable[[jax.Array], jax.Array]
    g2: Callable[[jax.Array], jax.Array]
    alpha: Callable[[jax.Array], jax.Array]
    sigma: Callable[[jax.Array], jax.Array]
    prior_std: float
    t_max: float

    def marginal(self, x0: jax.Array, t) -> tuple[jax.Array, jax.Array]:
        """Mean and std of ``x_t | x_0``; ``t`` a scalar or per-particle ``(N,)``."""
        return _bcast(self.alpha(t), x0) * x0, self.sigma(t)

    def drift(self, x: jax.Array, t) -> jax.Array:
        """Forward drift ``f(t) x``."""
        return _bcast(self.f(t), x) * x

    def diffusion(self, t) -> jax.Array:
        """Forward diffusion coefficient ``g(t)``."""
        return jnp.sqrt(self.g2(t))

    def reverse_drift(self, score_fn: ScoreFn, x: jax.Array, t) -> jax.Array:
        """Reverse-time SDE drift ``f(t) x - g(t)^2 score(x, t)`` (integrated with ``dt < 0``)."""
        return self.drift(x, t) - _bcast(self.g2(t), x) * score_fn(x, t)

    def ode_drift(self, score_fn: ScoreFn, x: jax.Array, t) -> jax.Array:
        """Probability-flow ODE velocity ``f(t) x - g(t)^2 score(x, t) / 2``."""
        return self.drift(x, t) - 0.5 * _bcast(self.g2(t), x) * score_fn(x, t)

    def prior_sample(self, key: jax.Array, shape) -> jax.Array:
        """Draw ``x_T ~ N(0, prior_std^2 I)`` of the given shape."""
        return self.prior_std * jax.random.normal(key, tuple(shape))

    def prior_log_prob(self, x: jax.Array) -> jax.Array:
        """Log density of the prior, summed over all but the leading (particle) axis."""
        z = x / self.prior_std
        per = -0.5 * z**2 - math.log(self.prior_std) - 0.5 * math.log(2 * math.pi)
        return jnp.sum(per.reshape(x.shape[0], -1), axis=-1)


def checked_score(score_fn: ScoreFn, where: str) -> ScoreFn:
    """Wrap ``score_fn`` so a wrong output shape raises (at trace time) naming ``where``.

    The output is cast to the dtype of ``x``: the particles keep the caller's dtype even if
    the score computes in another (a float64 model on float32 particles).
    """

    def wrapped(x, t):
        out = score_fn(x, t)
        if jnp.shape(out) != x.shape:
            raise SettingError(f"{where}: score_fn(x, t) must return an array of x's shape {x.shape}, "
                               f"got {jnp.shape(out)}")
        return jnp.asarray(out).astype(x.dtype)

    return wrapped


def _as_field(drift: Callable, score_fn: ScoreFn) -> Callable:
    """The vector field ``f(t, x) = drift(score_fn, x, t)`` of an SDE drift method.

    The one place where diffusion's ``score_fn(x, t)`` convention (batch first, as in the
    score-based literature) meets the ``f(t, x)`` fields of :mod:`probgen.dynamics`:
    ``drift`` is ``sde.reverse_drift`` or ``sde.ode_drift``.
    """
    return lambda t, x: drift(score_fn, x, t)


def _check_positive(name: str, **values) -> None:
    for key, value in values.items():
        if not (isinstance(value, (int, float)) and value > 0):
            raise SettingError(f"{name}: {key} must be a positive number, got {value!r}")


def _linear_beta(name, beta_min, beta_max, t_max):
    """``beta(t) = beta_min + t (beta_max - beta_min)`` and ``log alpha(t) = -int_0^t beta / 2``."""
    _check_positive(name, beta_min=beta_min, beta_max=beta_max, t_max=t_max)

    def beta(t):
        return beta_min + t * (beta_max - beta_min)

    def log_alpha(t):
        return -0.5 * (beta_min * t + 0.5 * (beta_max - beta_min) * t**2)

    return beta, log_alpha


def _variance_preserving(name, beta, log_alpha, t_max, sub: bool = False) -> SDE:
    """``dx = -beta(t)/2 x dt + g(t) dW`` with ``alpha = exp(log_alpha)`` and a unit prior.

    VP: ``g^2 = beta`` and ``sigma^2 = 1 - alpha^2``; sub-VP: ``g^2 = beta (1 - alpha^4)`` and
    ``sigma = 1 - alpha^2`` (Song et al. 2021, eq. 34).
    """
    if sub:
        g2 = lambda t: -beta(t) * jnp.expm1(4.0 * log_alpha(t))  # noqa: E731
        sigma = lambda t: -jnp.expm1(2.0 * log_alpha(t))  # noqa: E731
    else:
        g2 = beta
        sigma = lambda t: jnp.sqrt(-jnp.expm1(2.0 * log_alpha(t)))  # noqa: E731
    return SDE(
        name=name,
        f=lambda t: -0.5 * beta(t),
        g2=g2,
        alpha=lambda t: jnp.exp(log_alpha(t)),
        sigma=sigma,
        prior_std=1.0,
        t_max=float(t_max),
    )


def vp(beta_min: float = 0.1, beta_max: float = 20.0, t_max: float = 1.0) -> SDE:
    """Variance-preserving SDE with linear schedule ``beta(t) = beta_min + t (beta_max - beta_min)``.

    ``dx = -beta(t)/2 x dt + sqrt(beta(t)) dW``: the continuous-time DDPM (Ho et al. 2020;
    Song et al. 2021).

    Args:
      beta_min, beta_max: noise rates at ``t = 0`` and ``t = 1``.
      t_max: terminal time.

    Returns:
      An :class:`SDE`.

    Example:
        >>> import probgen as pg
        >>> round(float(pg.diffusion.vp().sigma(1.0)), 4)
        1.0
    """
    return _variance_preserving("vp", *_linear_beta("vp", beta_min, beta_max, t_max), t_max)


def vp_cosine(offset: float = 0.008, t_max: float = 0.99) -> SDE:
    """Variance-preserving SDE with the cosine schedule of Nichol & Dhariwal (2021).

    ``alpha(t)^2 = cos^2(phi(t)) / cos^2(phi(0))`` with ``phi(t) = (t + offset)/(1 + offset) * pi/2``
    and ``beta(t) = -d log alpha(t)^2 / dt``. ``beta`` diverges at ``t = 1``, so the process
    stops at ``t_max < 1`` (default 0.99, where ``alpha^2 ~ 2.4e-4``).

    Example:
        >>> import probgen as pg
        >>> sde = pg.diffusion.vp_cosine()
        >>> float(sde.alpha(0.0))
        1.0
    """
    _check_positive("vp_cosine", offset=offset, t_max=t_max)
    if t_max >= 1.0:
        raise SettingError(f"vp_cosine: t_max must be < 1 (beta(t) diverges at 1), got {t_max}")
    scale = 0.5 * math.pi / (1.0 + offset)
    log_cos0 = math.log(math.cos(offset * scale))

    def phi(t):
        return (t + offset) * scale

    def log_alpha(t):
        return jnp.log(jnp.cos(phi(t))) - log_cos0

    def beta(t):
        return 2.0 * scale * jnp.tan(phi(t))

    return _variance_preserving("vp_cosine", beta, log_alpha, t_max)


def subvp(beta_min: float = 0.1, beta_max: float = 20.0, t_max: float = 1.0) -> SDE:
    """Sub-variance-preserving SDE (Song et al. 2021, eq. 34).

    Same mean as :func:`vp`; ``sigma(t) = 1 - exp(-B(t))`` and
    ``g(t)^2 = beta(t) (1 - exp(-2 B(t)))`` with ``B(t) = int_0^t beta``.

    Example:
        >>> import probgen as pg
        >>> float(pg.diffusion.subvp().sigma(0.0))
        0.0
    """
    return _variance_preserving("subvp", *_linear_beta("subvp", beta_min, beta_max, t_max), t_max, sub=True)


def ve(sigma_min: float = 0.01, sigma_max: float = 50.0, t_max: float = 1.0) -> SDE:
    """Variance-exploding SDE with geometric noise ``sigma(t) = sigma_min (sigma_max/sigma_min)^t``.

    ``dx = sqrt(d sigma(t)^2 / dt) dW`` (SMLD / NCSN, Song & Ermon 2019). The marginal is
    ``p_t = p_data * N(0, sigma(t)^2 I)``; the prior is ``N(0, sigma(t_max)^2 I)``.

    Example:
        >>> import probgen as pg
        >>> round(float(pg.diffusion.ve().sigma(1.0)), 3)
        50.0
    """
    _check_positive("ve", sigma_min=sigma_min, sigma_max=sigma_max, t_max=t_max)
    if sigma_max <= sigma_min:
        raise SettingError(f"ve: sigma_max ({sigma_max}) must exceed sigma_min ({sigma_min})")
    log_ratio = math.log(sigma_max / sigma_min)

    def sigma(t):
        return sigma_min * jnp.exp(t * log_ratio)

    return SDE(
        name="ve",
        f=lambda t: 0.0 * jnp.asarray(t),
        g2=lambda t: 2.0 * log_ratio * sigma(t) ** 2,
        alpha=lambda t: 1.0 + 0.0 * jnp.asarray(t),
        sigma=sigma,
        prior_std=float(sigma_min * math.exp(t_max * log_ratio)),
        t_max=float(t_max),
    )

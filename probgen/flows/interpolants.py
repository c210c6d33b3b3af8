"""Stochastic interpolants and flow-matching losses.

An interpolant joins two samplers: ``x_t = alpha(t) x0 + beta(t) x1 + gamma(t) z`` with
``z ~ N(0, I)`` independent of the pair ``(x0, x1)`` (Albergo, Boffi & Vanden-Eijnden,
2023, "Stochastic Interpolants: A Unifying Framework for Flows and Diffusions"). ``x0``
need not be Gaussian. The velocity ``b(t, x) = E[x'_t | x_t = x]`` transports ``p0`` to
``p1`` by the ODE ``dx = b dt``; when ``gamma > 0`` the score is ``-E[z | x_t] / gamma``.
The linear interpolant with ``gamma = 0`` is rectified flow / flow matching (Liu et al.,
2023; Lipman et al., 2023).

Training losses, in the direct form every trainable objective in probgen has:
:func:`velocity_matching` and :func:`interpolant_score_matching` return
``loss(params, key, batch) -> scalar`` for ``pg.fit`` / ``pg.sweep`` / ``jax.grad`` / optax,
with a network ``fn(params, t, x)`` and ``batch`` the data ``x1`` (base draws ``x0 ~ N(0, I)``
made from the key) or a pair ``(x0, x1)``. :func:`velocity_loss` and :func:`score_loss` are
the same losses for a given function and explicit pairs.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.errors import SettingError
from probgen.core.numerics import as_float


class Interpolant(NamedTuple):
    """Coefficients ``alpha(t), beta(t), gamma(t)`` (scalar functions of scalar ``t``).

    Need ``alpha(0) = beta(1) = 1``, ``alpha(1) = beta(0) = gamma(0) = gamma(1) = 0``.
    Derivatives come from ``jax.grad``.
    """

    alpha: Callable
    beta: Callable
    gamma: Callable


def linear_interpolant() -> Interpolant:
    """``x_t = (1 - t) x0 + t x1`` (rectified flow).

    Example:
        >>> import probgen as pg
        >>> float(pg.flows.linear_interpolant().beta(0.25))
        0.25
    """
    return Interpolant(lambda t: 1.0 - t, lambda t: t, lambda t: 0.0 * t)


def trig_interpolant() -> Interpolant:
    """``x_t = cos(pi t / 2) x0 + sin(pi t / 2) x1`` (variance preserving for unit variances).

    Example:
        >>> import probgen as pg
        >>> abs(float(pg.flows.trig_interpolant().alpha(1.0))) < 1e-6
        True
    """
    half_pi = jnp.pi / 2
    return Interpolant(lambda t: jnp.cos(half_pi * t), lambda t: jnp.sin(half_pi * t), lambda t: 0.0 * t)


def noisy_interpolant(noise_scale: float = 1.0, base: str = "linear") -> Interpolant:
    """A base interpolant plus ``gamma(t) = sqrt(noise_scale * t (1 - t))`` latent noise.

    Example:
        >>> import probgen as pg
        >>> float(pg.flows.noisy_interpolant(4.0).gamma(0.5))
        1.0
    """
    if base not in ("linear", "trig"):
        raise SettingError(f"noisy_interpolant: base must be 'linear' or 'trig', got {base!r}")
    if noise_scale <= 0:
        raise SettingError(f"noisy_interpolant: noise_scale must be positive, got {noise_scale}")
    b = linear_interpolant() if base == "linear" else trig_interpolant()
    return Interpolant(b.alpha, b.beta, lambda t: jnp.sqrt(noise_scale * t * (1.0 - t)))


def interpolate(interp: Interpolant, t, x0, x1, z):
    """``(x_t, dx_t/dt)`` for one time ``t`` (scalar) and vectors ``x0, x1, z``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> xt, dxt = pg.flows.interpolate(pg.flows.linear_interpolant(), 0.5, jnp.zeros(2), jnp.ones(2), jnp.zeros(2))
        >>> xt.tolist(), dxt.tolist()
        ([0.5, 0.5], [1.0, 1.0])
    """
    coeffs = jnp.stack([interp.alpha(t), interp.beta(t), interp.gamma(t)])
    # Differentiate in the data's floating dtype (float64 under x64), never a fixed float32.
    time_dtype = jnp.result_type(x0, float)
    rates = jax.jacfwd(lambda s: jnp.stack([interp.alpha(s), interp.beta(s), interp.gamma(s)]))(
        jnp.asarray(t, time_dtype))
    xt = coeffs[0] * x0 + coeffs[1] * x1 + coeffs[2] * z
    dxt = rates[0] * x0 + rates[1] * x1 + rates[2] * z
    return xt, dxt


def _check_pairs(x0, x1, name):
    if x0.ndim != 2 or x0.shape != x1.shape:
        raise SettingError(f"{name}: x0 and x1 must both have shape (batch, dim); got {x0.shape} and {x1.shape}")


def _draw_times_noise(key, x0, t_eps):
    kt, kz = jax.random.split(key)
    dtype = jnp.result_type(x0, float)
    t = jax.random.uniform(kt, (x0.shape[0],), dtype, minval=t_eps, maxval=1.0 - t_eps)
    return t, jax.random.normal(kz, x0.shape, dtype)


def velocity_loss(velocity: Callable, key: jax.Array, x0: jax.Array, x1: jax.Array,
                  interp: Interpolant | None = None, t_eps: float = 1e-3) -> jax.Array:
    """Flow-matching / interpolant velocity loss ``E |b(t, x_t) - dx_t/dt|^2`` of a given ``velocity``.

    Its minimizer is ``b(t, x) = E[dx_t/dt | x_t = x]``, the transport velocity. To train
    parameters, use the direct form :func:`velocity_matching` (``loss(params, key, batch)``).

    Args:
      velocity: ``velocity(t, x) -> (dim,)`` for scalar ``t`` and one point ``x``.
      key: PRNG key (times ``t ~ U[t_eps, 1 - t_eps]`` and noise ``z``).
      x0, x1: paired draws of shape ``(batch, dim)`` (any coupling; see :func:`ot_coupling`).
      interp: the interpolant (default linear).
      t_eps: keeps ``t`` away from the ends where ``gamma'`` is unbounded.

    Returns:
      The Monte Carlo loss (scalar).

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> x0, x1 = jnp.zeros((4, 2)), jnp.ones((4, 2))
        >>> float(pg.flows.velocity_loss(lambda t, x: jnp.ones(2), jax.random.key(0), x0, x1))
        0.0
    """
    _check_pairs(x0, x1, "velocity_loss")
    interp = interp or linear_interpolant()
    t, z = _draw_times_noise(key, x0, t_eps)
    xt, dxt = jax.vmap(lambda *a: interpolate(interp, *a))(t, x0, x1, z)
    pred = jax.vmap(velocity)(t, xt)
    return jnp.mean(jnp.sum((pred - dxt) ** 2, -1))


def score_loss(score: Callable, key: jax.Array, x0: jax.Array, x1: jax.Array,
               interp: Interpolant, t_eps: float = 1e-3) -> jax.Array:
    """Interpolant score loss ``E |gamma(t) s(t, x_t) + z|^2`` of a given ``score`` (needs ``gamma > 0``).

    Its minimizer is the score ``s(t, x) = grad log p_t(x) = -E[z | x_t = x] / gamma(t)``.
    To train parameters, use the direct form :func:`interpolant_score_matching`.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> x = jnp.zeros((8, 1))
        >>> bool(pg.flows.score_loss(lambda t, x: -x, jax.random.key(0), x, x, pg.flows.noisy_interpolant()) > 0)
        True
    """
    _check_pairs(x0, x1, "score_loss")
    t, z = _draw_times_noise(key, x0, t_eps)
    xt, _ = jax.vmap(lambda *a: interpolate(interp, *a))(t, x0, x1, z)
    gamma = jax.vmap(interp.gamma)(t)[:, None]
    pred = jax.vmap(score)(t, xt)
    return jnp.mean(jnp.sum((gamma * pred + z) ** 2, -1))


def _pairs_from_batch(key: jax.Array, batch, where: str) -> tuple:
    """``(key, x0, x1)`` from a batch ``x1`` (``x0 ~ N(0, I)`` drawn from ``key``) or a pair ``(x0, x1)``."""
    if isinstance(batch, (tuple, list)):
        if len(batch) != 2:
            raise SettingError(f"{where}: batch must be the data x1 or a pair (x0, x1), got a sequence of {len(batch)}")
        x0, x1 = (jnp.asarray(x) for x in batch)
    else:
        x1 = as_float(batch)
        key, k_base = jax.random.split(key)
        x0 = jax.random.normal(k_base, x1.shape, x1.dtype)
    return key, x0, x1


def velocity_matching(interp: Interpolant, velocity_fn: Callable, t_eps: float = 1e-3) -> Callable:
    """Flow matching / interpolant velocity regression as ``loss(params, key, batch) -> scalar``.

    The direct form of :func:`velocity_loss`: ``loss(params, key, batch)`` is
    ``velocity_loss(lambda t, x: velocity_fn(params, t, x), key, x0, x1, interp, t_eps)``,
    so ``pg.fit(loss, params, optimizer, key, data=x1)`` trains the velocity that transports
    ``N(0, I)`` to the data.

    Args:
      interp: the :class:`Interpolant` (e.g. :func:`linear_interpolant`).
      velocity_fn: ``velocity_fn(params, t, x) -> (dim,)`` for scalar ``t`` and one point ``x``.
      t_eps: keeps ``t`` away from the ends.

    Returns:
      ``loss(params, key, batch)``; ``batch`` is the data ``x1`` of shape ``(batch, dim)``,
      paired with base draws ``x0 ~ N(0, I)`` made from ``key``, or a pair ``(x0, x1)``
      (any coupling, e.g. :func:`ot_coupling`).

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> loss = pg.flows.velocity_matching(pg.flows.linear_interpolant(), lambda p, t, x: p["shift"] - x)
        >>> jax.grad(loss)({"shift": jnp.zeros(2)}, jax.random.key(0), jnp.ones((16, 2)))["shift"].shape
        (2,)
    """
    def loss(params, key, batch):
        key, x0, x1 = _pairs_from_batch(key, batch, "velocity_matching")
        return velocity_loss(lambda t, x: velocity_fn(params, t, x), key, x0, x1, interp, t_eps)

    return loss


def interpolant_score_matching(interp: Interpolant, score_fn: Callable, t_eps: float = 1e-3) -> Callable:
    """The interpolant score loss as ``loss(params, key, batch) -> scalar`` (needs ``gamma > 0``).

    The direct form of :func:`score_loss`: ``loss(params, key, batch)`` is
    ``score_loss(lambda t, x: score_fn(params, t, x), key, x0, x1, interp, t_eps)``; its
    minimizer is the score of the interpolant's marginal ``p_t``.

    Args:
      interp: an :class:`Interpolant` with latent noise (e.g. :func:`noisy_interpolant`).
      score_fn: ``score_fn(params, t, x) -> (dim,)`` for scalar ``t`` and one point ``x``.
      t_eps: keeps ``t`` away from the ends.

    Returns:
      ``loss(params, key, batch)``; ``batch`` as for :func:`velocity_matching`.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> loss = pg.flows.interpolant_score_matching(pg.flows.noisy_interpolant(), lambda p, t, x: -p * x)
        >>> jax.grad(loss)(1.0, jax.random.key(0), jnp.ones((16, 2))).shape
        ()
    """
    def loss(params, key, batch):
        key, x0, x1 = _pairs_from_batch(key, batch, "interpolant_score_matching")
        return score_loss(lambda t, x: score_fn(params, t, x), key, x0, x1, interp, t_eps)

    return loss

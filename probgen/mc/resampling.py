"""Resampling schemes and weight diagnostics for particle methods.

Each scheme maps normalized-or-not log weights to ancestor indices whose counts have
expectation ``num_samples * w_i`` (unbiased resampling). All are jit/vmap-safe and
run in O(N log N) or better with no Python loop over particles.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

SCHEMES = ("multinomial", "stratified", "systematic", "residual")


def normalize(log_weights: jax.Array) -> jax.Array:
    """Normalized weights ``w_i = exp(lw_i) / sum_j exp(lw_j)``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> pg.mc.normalize(jnp.log(jnp.array([1.0, 3.0]))).tolist()
        [0.25, 0.75]
    """
    return jnp.exp(log_weights - logsumexp(log_weights))


def ess(log_weights: jax.Array) -> jax.Array:
    """Effective sample size ``1 / sum w_i^2`` of (unnormalized) log weights.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> float(pg.mc.ess(jnp.zeros(8)))
        8.0
    """
    w = normalize(log_weights)
    return 1.0 / jnp.sum(w**2)


def log_mean_exp(log_weights: jax.Array, axis: int | None = None) -> jax.Array:
    """``log(mean(exp(lw)))``, computed stably: the log of an IS evidence estimate."""
    n = log_weights.shape[axis] if axis is not None else log_weights.size
    return logsumexp(log_weights, axis=axis) - jnp.log(n)


def _from_uniforms(weights: jax.Array, uniforms: jax.Array) -> jax.Array:
    """Indices by inverting the CDF at sorted points in [0, 1)."""
    cdf = jnp.cumsum(weights)
    cdf = cdf / cdf[-1]
    idx = jnp.searchsorted(cdf, uniforms, side="right")
    return jnp.clip(idx, 0, weights.shape[0] - 1)


def multinomial(key: jax.Array, log_weights: jax.Array, num_samples: int) -> jax.Array:
    """I.i.d. draws of ancestors from the normalized weights.

    Inverts the CDF at i.i.d. uniforms (binary search): O(N log N), where a
    Gumbel-max ``categorical`` draw would cost O(N^2).
    """
    u = jax.random.uniform(key, (num_samples,))
    return _from_uniforms(normalize(log_weights), u)


def stratified(key: jax.Array, log_weights: jax.Array, num_samples: int) -> jax.Array:
    """One uniform per stratum ``[(i)/N, (i+1)/N)``."""
    u = (jnp.arange(num_samples) + jax.random.uniform(key, (num_samples,))) / num_samples
    return _from_uniforms(normalize(log_weights), u)


def systematic(key: jax.Array, log_weights: jax.Array, num_samples: int) -> jax.Array:
    """One shared uniform offset for all strata (lowest variance in practice)."""
    u = (jnp.arange(num_samples) + jax.random.uniform(key)) / num_samples
    return _from_uniforms(normalize(log_weights), u)


def residual(key: jax.Array, log_weights: jax.Array, num_samples: int) -> jax.Array:
    """``floor(N w_i)`` copies deterministically, the rest multinomial on the residuals."""
    w = normalize(log_weights)
    counts = jnp.floor(num_samples * w).astype(jnp.int32)
    num_left = num_samples - jnp.sum(counts)
    residual_w = num_samples * w - counts
    # Deterministic part: particle i repeated counts[i] times, laid out by cumsum.
    ends = jnp.cumsum(counts)
    slots = jnp.arange(num_samples)
    deterministic = jnp.searchsorted(ends, slots, side="right")
    # Random part fills slots >= sum(counts).
    # I.i.d. draws from the residual weights by CDF inversion (O(N log N)). When no
    # residual is left every slot is deterministic and these draws are unused.
    residual_w = jnp.maximum(residual_w, 0.0)
    safe = jnp.where(jnp.sum(residual_w) > 0, residual_w, jnp.ones_like(residual_w))
    random_part = _from_uniforms(safe, jax.random.uniform(key, (num_samples,)))
    del num_left
    return jnp.where(slots < ends[-1], jnp.clip(deterministic, 0, num_samples - 1), random_part).astype(jnp.int32)


_SCHEMES: dict[str, Callable] = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
}


def resample(key: jax.Array, log_weights: jax.Array, num_samples: int | None = None,
             scheme: str = "systematic") -> jax.Array:
    """Ancestor indices drawn by ``scheme`` from (unnormalized) log weights.

    Args:
      key: PRNG key.
      log_weights: shape ``(N,)``.
      num_samples: how many indices (default ``N``).
      scheme: ``"multinomial"``, ``"stratified"``, ``"systematic"`` or ``"residual"``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> idx = pg.mc.resample(jax.random.key(0), jnp.log(jnp.array([0.0, 1.0, 0.0])))
        >>> idx.tolist()
        [1, 1, 1]
    """
    if scheme not in _SCHEMES:
        raise ValueError(f"unknown resampling scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if log_weights.ndim != 1:
        raise ValueError(f"resample expects log_weights of shape (N,), got {log_weights.shape}")
    n = log_weights.shape[0] if num_samples is None else num_samples
    return _SCHEMES[scheme](key, log_weights, n)


def check_ess_threshold(ess_threshold, where: str) -> None:
    """Raise a clear error when a static ``ess_threshold`` lies outside ``(0, 1]``."""
    if isinstance(ess_threshold, (int, float)) and not isinstance(ess_threshold, bool):
        if not 0.0 < float(ess_threshold) <= 1.0:
            raise ValueError(
                f"{where}: ess_threshold must lie in (0, 1] (a fraction of the particle count; "
                f"1.0 resamples at every step), got {ess_threshold!r}"
            )
    elif isinstance(ess_threshold, bool) or ess_threshold is None:
        raise TypeError(f"{where}: ess_threshold must be a float in (0, 1], got {ess_threshold!r}")


def check_scheme(scheme: str, where: str) -> None:
    """Raise a clear error for an unknown resampling scheme name."""
    if scheme not in _SCHEMES:
        raise ValueError(f"{where}: unknown resampling scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")


def maybe_resample(key: jax.Array, particles, log_weights: jax.Array, ess_threshold: float = 0.5,
                   scheme: str = "systematic"):
    """Resample a particle pytree when its ESS falls below ``ess_threshold * N``.

    The log weights are unnormalized and carry the running evidence estimate:
    ``log_mean_exp(log_weights)`` is ``log Z_hat`` so far. After resampling, every
    particle gets the mean weight ``log_mean_exp(log_weights)``, so the evidence
    estimate is unchanged by resampling and keeps accumulating correctly across
    resampling and non-resampling steps (Del Moral, Doucet & Jasra 2012, adaptive SMC).
    Gradients do not flow through the ancestor indices (as in FIVO / VSMC / AESMC).

    Args:
      key: PRNG key.
      particles: a pytree whose leaves have a leading particle axis of size ``N``.
      log_weights: shape ``(N,)``.
      ess_threshold: fraction in ``(0, 1]``; ``1.0`` resamples at every call.
      scheme: ``"multinomial"``, ``"stratified"``, ``"systematic"`` or ``"residual"``.

    Returns:
      ``(particles, log_weights, resampled, ancestors)``: ``resampled`` is a boolean
      scalar, ``ancestors`` the ``(N,)`` indices used (``arange(N)`` when not resampled).

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> lw = jnp.log(jnp.array([1e-6, 1e-6, 1.0, 1e-6]))
        >>> x, new_lw, did, _ = pg.mc.maybe_resample(jax.random.key(0), jnp.arange(4.0), lw, 0.5)
        >>> x.tolist(), bool(did)
        ([2.0, 2.0, 2.0, 2.0], True)
    """
    check_ess_threshold(ess_threshold, "maybe_resample")
    check_scheme(scheme, "maybe_resample")
    if log_weights.ndim != 1:
        raise ValueError(f"maybe_resample expects log_weights of shape (N,), got {log_weights.shape}")
    num = log_weights.shape[0]
    for leaf in jax.tree.leaves(particles):
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != num:
            raise ValueError(
                f"maybe_resample: every particle leaf needs a leading axis of size {num} "
                f"(the number of log weights), got a leaf of shape {jnp.shape(leaf)}"
            )
    stopped = jax.lax.stop_gradient(log_weights)
    if isinstance(ess_threshold, (int, float)) and float(ess_threshold) >= 1.0:
        resampled = jnp.asarray(True)
    else:
        resampled = ess(stopped) < ess_threshold * num
    drawn = resample(key, stopped, num, scheme)
    ancestors = jnp.where(resampled, drawn, jnp.arange(num, dtype=drawn.dtype))
    particles = jax.tree.map(lambda leaf: jnp.take(leaf, ancestors, axis=0), particles)
    mean_weight = log_mean_exp(log_weights)
    log_weights = jnp.where(resampled, jnp.full_like(log_weights, mean_weight), log_weights)
    return particles, log_weights, resampled, ancestors

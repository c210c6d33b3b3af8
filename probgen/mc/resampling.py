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
    """I.i.d. draws of ancestors from the normalized weights."""
    return jax.random.categorical(key, log_weights, shape=(num_samples,))


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
    logits = jnp.where(residual_w > 0, jnp.log(jnp.maximum(residual_w, 1e-38)), -jnp.inf)
    random_part = jax.random.categorical(key, logits, shape=(num_samples,))
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

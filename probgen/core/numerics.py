"""Numerics shared across probgen: sums over particles in one fixed order, ``log_mean_exp``.

Sums over particles add in a fixed pairwise order written as element-wise operations, so
the result does not depend on how the particle axis is sharded (XLA's own reductions
change their order of addition with the sharding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _pairwise_sum(x: jax.Array) -> jax.Array:
    """Sum over the leading axis by repeated halving: one fixed order, whatever the sharding."""
    size = 1 << max(x.shape[0] - 1, 0).bit_length()
    x = jnp.pad(x, [(0, size - x.shape[0])] + [(0, 0)] * (x.ndim - 1))
    while x.shape[0] > 1:
        half = x.shape[0] // 2
        x = x[:half] + x[half:]
    return x[0]


def _logsumexp(log_weights: jax.Array) -> jax.Array:
    """``log(sum(exp(lw)))`` over the leading axis, stably and in a fixed order."""
    shift = jax.lax.stop_gradient(jnp.max(log_weights, axis=0))
    shift = jnp.where(jnp.isfinite(shift), shift, jnp.zeros_like(shift))
    return jnp.log(_pairwise_sum(jnp.exp(log_weights - shift))) + shift


def log_mean_exp(log_weights: jax.Array, axis: int | None = None) -> jax.Array:
    """``log(mean(exp(lw)))``, computed stably: the log of an IS evidence estimate.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> round(float(pg.mc.log_mean_exp(jnp.log(jnp.array([1.0, 3.0])))), 6)
        0.693147
    """
    log_weights = jnp.ravel(log_weights) if axis is None else jnp.moveaxis(log_weights, axis, 0)
    count = jnp.asarray(log_weights.shape[0], log_weights.dtype)
    return _logsumexp(log_weights) - jnp.log(count)


def as_float(tree):
    """``tree`` with integer (or bool) leaves cast to the default float; float leaves keep their dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from probgen.core.numerics import as_float
        >>> as_float(jnp.arange(2)).dtype == jnp.result_type(float), as_float(jnp.ones(1, jnp.float16)).dtype
        (True, dtype('float16'))
    """

    def leaf(u):
        u = jnp.asarray(u)
        return u if jnp.issubdtype(u.dtype, jnp.floating) else u.astype(jnp.result_type(float))

    return jax.tree.map(leaf, tree)

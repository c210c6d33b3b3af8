"""Resampling schemes and weight diagnostics for particle methods.

Each scheme maps normalized-or-not log weights to ancestor indices whose counts have
expectation ``num_samples * w_i`` (unbiased resampling). All are jit/vmap-safe and
run in O(N log N) or better with no Python loop over particles; a particle of weight
zero (log weight ``-inf``) is never drawn.

Every sum over particles here (normalization, ESS, the CDF, the evidence) adds in one
fixed pairwise order, written as element-wise operations. XLA's own reductions
(``jnp.sum``, ``jnp.cumsum``) change their order of addition with the sharding of the
particle axis, so a sharded particle filter would pick a different ancestor wherever a
uniform falls within rounding of a CDF step, and from there follow another random path.
With the fixed order, the same key gives the same ancestors on one device or many.

Degenerate weights (all ``-inf``, or any NaN or ``+inf``) leave nothing to resample:
every draw is then particle 0. Under :func:`pg.validate` they raise a
``ValidationError`` naming ``log_weights`` instead.
"""

from __future__ import annotations

import numbers
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core.checks import static_int
from probgen.core.errors import SettingError
from probgen.core.numerics import _logsumexp, _pairwise_sum, log_mean_exp
from probgen.core.validation import check
from probgen.mc.checks import concrete_value

SCHEMES = ("multinomial", "stratified", "systematic", "residual")


def normalize_weights(log_weights: jax.Array) -> jax.Array:
    """Normalized weights ``w_i = exp(lw_i) / sum_j exp(lw_j)`` of (unnormalized) log weights.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> pg.mc.normalize_weights(jnp.log(jnp.array([1.0, 3.0]))).round(6).tolist()
        [0.25, 0.75]
    """
    return jnp.exp(log_weights - _logsumexp(log_weights))


def ess(log_weights: jax.Array) -> jax.Array:
    """Effective sample size ``1 / sum w_i^2`` of (unnormalized) log weights.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> round(float(pg.mc.ess(jnp.zeros(8))), 6)
        8.0
    """
    w = normalize_weights(log_weights)
    return 1.0 / _pairwise_sum(w**2)


def _check_log_weights(log_weights: jax.Array, where: str) -> None:
    """``log_weights`` must be a vector; under ``pg.validate``, one with something to resample."""
    if jnp.ndim(log_weights) != 1:
        raise SettingError(f"{where}: log_weights must have shape (N,), got {jnp.shape(log_weights)}")
    check(
        jnp.any(log_weights > -jnp.inf) & ~jnp.any(jnp.isnan(log_weights) | (log_weights == jnp.inf)),
        f"{where}: log_weights must hold at least one finite value and no NaN or +inf "
        "(all -inf, NaN or +inf weights leave nothing to resample); largest log weight: {largest}",
        largest=jnp.max(log_weights),
    )


def _weights(log_weights: jax.Array, num_samples, where: str) -> tuple[jax.Array, int]:
    """Checked normalized weights and the static sample count of one scheme call."""
    num_samples = static_int(num_samples, "num_samples", where)
    _check_log_weights(log_weights, where)
    return normalize_weights(log_weights), num_samples


def _from_uniforms(weights: jax.Array, uniforms: jax.Array) -> jax.Array:
    """Indices by inverting the CDF at points in [0, 1]; a zero weight is never picked.

    The CDF's rounding can leave a step at a zero weight (adjacent prefix sums are added
    in different orders), so each zero weight is given its predecessor's CDF value; and a
    point can round up to 1.0 (``(i + u) / n`` in float32), which goes to the last
    particle of positive weight, the owner of that end of the CDF.
    """
    num = weights.shape[0]
    positive = weights > 0  # False for NaN
    cdf = jax.lax.associative_scan(jnp.add, weights)
    cdf = jax.lax.associative_scan(jnp.maximum, jnp.where(positive, cdf, jnp.zeros_like(cdf)))
    total = cdf[-1]
    cdf = cdf / jnp.where(total > 0, total, jnp.ones_like(total))
    found = jnp.searchsorted(cdf, uniforms, side="right")
    last_positive = jnp.max(jnp.where(positive, jnp.arange(num, dtype=found.dtype), 0))
    return jnp.where(found < num, found, last_positive)


def multinomial(key: jax.Array, log_weights: jax.Array, num_samples: int) -> jax.Array:
    """I.i.d. draws of ancestors from the normalized weights.

    Inverts the CDF at i.i.d. uniforms (binary search): O(N log N), where a
    Gumbel-max ``categorical`` draw would cost O(N^2).

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> pg.mc.multinomial(jax.random.key(0), jnp.log(jnp.array([0.0, 1.0])), 3).tolist()
        [1, 1, 1]
    """
    w, num_samples = _weights(log_weights, num_samples, "multinomial")
    return _from_uniforms(w, jax.random.uniform(key, (num_samples,), w.dtype))


def _stratified_points(key: jax.Array, num_samples: int, dtype, offset_shape: tuple) -> jax.Array:
    """``(i + u_i) / n`` for the strata ``i < n``: one uniform per stratum, or one shared (shape ``()``)."""
    strata = jnp.arange(num_samples, dtype=dtype)
    return (strata + jax.random.uniform(key, offset_shape, dtype)) / num_samples


def stratified(key: jax.Array, log_weights: jax.Array, num_samples: int) -> jax.Array:
    """One uniform per stratum ``[i/n, (i+1)/n)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> pg.mc.stratified(jax.random.key(0), jnp.log(jnp.array([0.5, 0.5])), 4).tolist()
        [0, 0, 1, 1]
    """
    w, num_samples = _weights(log_weights, num_samples, "stratified")
    return _from_uniforms(w, _stratified_points(key, num_samples, w.dtype, (num_samples,)))


def systematic(key: jax.Array, log_weights: jax.Array, num_samples: int) -> jax.Array:
    """One shared uniform offset for all strata (lowest variance in practice).

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> ancestors = pg.mc.systematic(jax.random.key(0), jnp.log(jnp.array([0.25, 0.75])), 4)
        >>> jnp.bincount(ancestors, length=2).tolist()  # exactly n w_i copies when those are integers
        [1, 3]
    """
    w, num_samples = _weights(log_weights, num_samples, "systematic")
    return _from_uniforms(w, _stratified_points(key, num_samples, w.dtype, ()))


def residual(key: jax.Array, log_weights: jax.Array, num_samples: int) -> jax.Array:
    """``floor(n w_i)`` copies deterministically, the rest multinomial on the residuals.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> pg.mc.residual(jax.random.key(0), jnp.log(jnp.array([0.5, 0.25, 0.25])), 4).tolist()
        [0, 0, 1, 2]
    """
    w, num_samples = _weights(log_weights, num_samples, "residual")
    positive = w > 0  # False for NaN: degenerate weights leave no deterministic copies
    expected = jnp.where(positive, num_samples * w, jnp.zeros_like(w))
    counts = jnp.floor(expected).astype(jnp.int32)
    # Deterministic part: particle i fills slots [ends[i-1], ends[i]) (integer sums: exact).
    ends = jnp.cumsum(counts)
    slots = jnp.arange(num_samples, dtype=ends.dtype)
    deterministic = jnp.clip(jnp.searchsorted(ends, slots, side="right"), 0, w.shape[0] - 1)
    # Slots from sum(counts) on: i.i.d. draws from the residuals n w_i - floor(n w_i).
    random_part = _from_uniforms(expected - counts, jax.random.uniform(key, (num_samples,), w.dtype))
    return jnp.where(slots < ends[-1], deterministic, random_part).astype(jnp.int32)


_SCHEMES: dict[str, Callable] = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
}


def check_scheme(scheme, where: str) -> None:
    """Raise a :class:`SettingError` for an unknown resampling scheme name."""
    if not isinstance(scheme, str) or scheme not in _SCHEMES:
        raise SettingError(f"{where}: unknown resampling scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")


def _is_real_scalar(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Real):
        return True
    return (isinstance(value, (jax.Array, np.ndarray)) and value.ndim == 0
            and (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)))


def check_ess_threshold(ess_threshold, where: str, name: str = "ess_threshold", allow_zero: bool = True) -> None:
    """An ESS fraction must be a real number in ``[0, 1]``: a Python or NumPy number or a scalar array.

    For a resampling threshold, ``0`` never resamples and ``1`` resamples at every step.
    ``allow_zero=False`` asks for ``(0, 1]`` (a tempering target ESS of 0 would skip the
    tempering). Numbers and concrete arrays are checked now; a traced array (e.g. under
    ``vmap`` over thresholds) is checked at run time under :func:`pg.validate`. Anything
    else, or a value out of range, is a :class:`SettingError` naming ``where`` and ``name``.

    Example:
        >>> from probgen.mc.resampling import check_ess_threshold
        >>> check_ess_threshold(0.0, "my_filter")  # never resample: fine
        >>> try:
        ...     check_ess_threshold(1.5, "my_filter")
        ... except ValueError as e:
        ...     print(e)
        my_filter: ess_threshold must lie in [0, 1] (a fraction of the particle count; ...), got 1.5
    """
    interval = "[0, 1]" if allow_zero else "(0, 1]"
    if not _is_real_scalar(ess_threshold):
        raise SettingError(f"{where}: {name} must be a float in {interval}, got {ess_threshold!r}")
    meaning = "; 0 never resamples, 1 resamples at every step" if allow_zero else ""
    message = f"{where}: {name} must lie in {interval} (a fraction of the particle count{meaning}), got {{value}}"
    value = concrete_value(ess_threshold)
    if value is None:
        above = (ess_threshold >= 0) if allow_zero else (ess_threshold > 0)
        check(above & (ess_threshold <= 1), message, value=ess_threshold)
    elif not (0.0 <= float(value) <= 1.0 and (allow_zero or float(value) > 0.0)):
        raise SettingError(message.format(value=repr(ess_threshold)))


def resample(key: jax.Array, log_weights: jax.Array, num_samples: int | None = None,
             scheme: str = "systematic") -> jax.Array:
    """Ancestor indices drawn by ``scheme`` from (unnormalized) log weights.

    Args:
      key: PRNG key.
      log_weights: shape ``(N,)``.
      num_samples: how many indices (default ``N``); fewer or more than ``N`` is fine.
      scheme: ``"multinomial"``, ``"stratified"``, ``"systematic"`` or ``"residual"``.

    Returns:
      ``(num_samples,)`` int indices into the ``N`` particles. Degenerate weights (all
      ``-inf``, or any NaN or ``+inf``) give index 0 everywhere; wrap the caller in
      :func:`pg.validate` to have them raise a ``ValidationError`` naming ``log_weights``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> idx = pg.mc.resample(jax.random.key(0), jnp.log(jnp.array([0.0, 1.0, 0.0])))
        >>> idx.tolist()
        [1, 1, 1]
    """
    check_scheme(scheme, "resample")
    _check_log_weights(log_weights, "resample")
    num_samples = log_weights.shape[0] if num_samples is None else num_samples
    return _SCHEMES[scheme](key, log_weights, num_samples)


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
      ess_threshold: fraction in ``[0, 1]`` (a number, or a scalar float array, e.g. to
        ``vmap`` over thresholds); ``0`` never resamples (plain sequential importance
        sampling; a concrete 0 skips the draw altogether) and ``1`` resamples at every call.
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
    _check_log_weights(log_weights, "maybe_resample")
    num = log_weights.shape[0]
    for leaf in jax.tree.leaves(particles):
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != num:
            raise SettingError(
                f"maybe_resample: every leaf of particles needs a leading axis of size {num} "
                f"(the number of log weights), got a leaf of shape {jnp.shape(leaf)}"
            )
    identity = jnp.arange(num, dtype=jnp.int32)
    known = concrete_value(ess_threshold)
    if known is not None and float(known) == 0.0:
        return particles, log_weights, jnp.asarray(False), identity
    stopped = jax.lax.stop_gradient(log_weights)
    threshold = jnp.asarray(ess_threshold)
    # ESS <= N only up to rounding, so a threshold of 1 resamples by fiat, not by comparison;
    # a threshold of 0 never does (not even on NaN weights, whose ESS compares False anyway).
    resampled = ((ess(stopped) < threshold * num) & (threshold > 0)) | (threshold >= 1.0)
    drawn = resample(key, stopped, num, scheme)
    ancestors = jnp.where(resampled, drawn, identity.astype(drawn.dtype))
    particles = jax.tree.map(lambda leaf: jnp.take(leaf, ancestors, axis=0), particles)
    mean_weight = log_mean_exp(log_weights)
    log_weights = jnp.where(resampled, jnp.full_like(log_weights, mean_weight), log_weights)
    return particles, log_weights, resampled, ancestors

"""Twisted SMC guidance: importance-weighted particles of a pretrained sampler, tilted by a reward.

Target: ``p(x_0) exp(r(x_0) / alpha) / Z`` with ``Z = E_p[exp(r(x_0) / alpha)]``, where ``p`` is
the pretrained sampler's distribution. The intermediate targets are
``pi_t(x_t) ∝ p_t(x_t) exp(v(x_t, t) / alpha)`` with the soft value ``v`` (exact when
``v(x_t, t) = alpha log E_p[exp(r(x_0) / alpha) | x_t]``; any approximation still gives a
consistent sampler and an unbiased ``Z``, only with more weight variance). The proposal is the
pretrained step itself, so the incremental log weight is ``(v(x_s, s) - v(x_t, t)) / alpha``,
starting from ``v(x_T, T) / alpha`` for ``x_T`` from the prior and with ``v`` at the last step
replaced by the reward: the weights telescope to ``exp(r(x_0) / alpha)`` along each path
(twisted SMC; Wu et al. 2023, "Practical and Asymptotically Exact Conditional Sampling in
Diffusion Models"; the SMC variant discussed with SVDD, Li et al. 2024). Adaptive resampling
(``pg.mc.maybe_resample``) gives resampled particles the mean weight, so ``log_mean_exp`` of the
log weights is ``log Z_hat`` at every step, and ``Z_hat`` is unbiased for ``Z`` at the end
(Del Moral 2004). Works with any sampler kernel whose state has particles ``x`` and a time ``t``
(continuous or discrete, see :mod:`probgen.diffusion.svdd`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.errors import SettingError
from probgen.core.numerics import log_mean_exp
from probgen.diffusion.svdd import (
    ValueFn,
    _check_alpha,
    _check_kernel,
    _check_particle_state,
    _num_steps,
    _particle_leaves,
    _particle_values,
)
from probgen.kernels import Kernel, run
from probgen.mc.resampling import check_ess_threshold, check_scheme, ess, maybe_resample


class SMCGuidanceState(NamedTuple):
    """State of :func:`smc_guidance`.

    Attributes:
      inner: the pretrained sampler's state (particles ``inner.x``, time ``inner.t``, ...).
      value: ``(N,)`` the current ``v(x_t, t)`` (the reward after the last step).
      log_weights: ``(N,)`` unnormalized log weights; ``log_mean_exp`` of them is ``log Z_hat``.
      log_evidence: ``log Z_hat`` so far (``Z`` itself after the last step).
      step: steps taken.
    """

    inner: Any
    value: jax.Array
    log_weights: jax.Array
    log_evidence: jax.Array
    step: jax.Array

    @property
    def x(self) -> jax.Array:
        """The particles of the inner sampler state."""
        return self.inner.x


class SMCGuidanceInfo(NamedTuple):
    """Diagnostics of one step: the new log weights, their ESS, and whether the step began by resampling."""

    log_weights: jax.Array
    ess: jax.Array
    resampled: jax.Array


def smc_guidance(kernel: Kernel, value_fn: ValueFn, alpha: float, reward_fn: Callable | None = None,
                 ess_threshold: float = 0.5, scheme: str = "systematic") -> Kernel:
    """Twisted SMC over a pretrained sampler kernel, targeting ``p(x_0) exp(r(x_0) / alpha) / Z``.

    Each step resamples when ``ESS < ess_threshold * N`` (``pg.mc.maybe_resample``), moves the
    particles with ``kernel.step`` and adds ``(v(x_s, s) - v(x_t, t)) / alpha`` to their log
    weights; on the kernel's last step (its ``horizon``) ``v`` is replaced by ``reward_fn``.

    Args:
      kernel: the pretrained sampler, a :class:`probgen.Kernel` whose state has particles ``x``
        ``(N, ...)`` of any dtype and a scalar time ``t``; it needs a ``horizon`` when
        ``reward_fn`` is given.
      value_fn: ``value_fn(x, t) -> (N,)`` the soft value.
      alpha: the temperature ``> 0`` (a number, or a traced scalar checked under ``pg.validate``).
      reward_fn: ``reward_fn(x) -> (N,)`` used in place of ``value_fn`` after the last step
        (``None``: ``value_fn`` at the final time, appropriate when it equals the reward there).
      ess_threshold: resampling threshold in ``[0, 1]`` (0 never, 1 always).
      scheme: resampling scheme of ``pg.mc.resample``.

    Returns:
      A :class:`probgen.Kernel` with ``init(x, *args) -> SMCGuidanceState`` (``x`` and ``args``
      go to ``kernel.init``; the log weights start at ``v(x_T, T) / alpha``), info
      :class:`SMCGuidanceInfo` and the pretrained kernel's horizon.

    Raises:
      SettingError: ``alpha <= 0``, a bad ``ess_threshold`` or ``scheme``, wrong value shapes,
        or a ``reward_fn`` with a kernel without horizon. ArgumentError: ``kernel`` is not a
        kernel, or its state has no ``x`` or ``t``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> sde = pg.diffusion.vp()
        >>> sampler = pg.diffusion.euler_maruyama(sde, lambda x, t: -x, num_steps=50)  # p = N(0, 1)
        >>> smc = pg.diffusion.smc_guidance(sampler, lambda x, t: jnp.zeros(x.shape[0]), 1.0,
        ...                                 reward_fn=lambda x: x[:, 0])
        >>> final, info = pg.run(smc, jax.random.key(0), smc.init(sde.prior_sample(jax.random.key(1), (4000, 1))), 50)
        >>> abs(float(final.log_evidence) - 0.5) < 0.1  # log E[exp(x)] = 1/2 for x ~ N(0, 1)
        True
    """
    _check_kernel(kernel, "smc_guidance")
    _check_alpha(alpha, "smc_guidance", allow_zero=False)
    check_ess_threshold(ess_threshold, "smc_guidance")
    check_scheme(scheme, "smc_guidance")
    horizon = kernel.horizon
    if reward_fn is not None and horizon is None:
        raise SettingError("smc_guidance: a reward_fn needs a fixed-horizon kernel (its horizon marks the last "
                           "step, where the reward replaces the value); this kernel has horizon None")

    def values(inner):
        num = jnp.shape(inner.x)[0]
        return _particle_values(value_fn, (inner.x, inner.t), num, "smc_guidance", "value_fn(x, t)")

    def init(x, *args, **kwargs):
        inner = kernel.init(x, *args, **kwargs)
        _check_particle_state(inner, "smc_guidance")
        value = values(inner)
        log_weights = value / alpha
        return SMCGuidanceState(inner, value, log_weights, log_mean_exp(log_weights), jnp.zeros((), jnp.int32))

    def step(key, state):
        _check_particle_state(state.inner, "smc_guidance")
        num = jnp.shape(state.inner.x)[0]
        k_resample, k_move = jax.random.split(key)
        leaves, treedef = jax.tree.flatten(state.inner)
        is_particle = _particle_leaves(state.inner, num)
        moving = [leaf for leaf, per in zip(leaves, is_particle) if per]
        (moving, value), log_weights, resampled, _ = maybe_resample(
            k_resample, (moving, state.value), state.log_weights, ess_threshold, scheme)
        refill = iter(moving)
        inner = jax.tree.unflatten(treedef, [next(refill) if per else leaf for leaf, per in zip(leaves, is_particle)])
        inner, _ = kernel.step(k_move, inner)
        if reward_fn is None:
            new_value = values(inner)
        else:
            reward = lambda: _particle_values(reward_fn, (inner.x,), num, "smc_guidance", "reward_fn(x)")  # noqa: E731
            new_value = jax.lax.cond(state.step + 1 >= horizon, lambda: reward().astype(value.dtype),
                                     lambda: values(inner).astype(value.dtype))
        log_weights = log_weights + (new_value - value) / alpha
        new_state = SMCGuidanceState(inner, new_value, log_weights, log_mean_exp(log_weights), state.step + 1)
        return new_state, SMCGuidanceInfo(log_weights, ess(log_weights), resampled)

    return Kernel(init=init, step=step, horizon=horizon)


def smc_guidance_sample(key: jax.Array, kernel: Kernel, x: jax.Array, value_fn: ValueFn, alpha: float,
                        reward_fn: Callable | None = None, num_steps: int | None = None,
                        ess_threshold: float = 0.5, scheme: str = "systematic"):
    """Run :func:`smc_guidance` from the particles ``x`` (e.g. ``x_T`` from the prior) to the end.

    Args:
      key: PRNG key.
      kernel, value_fn, alpha, reward_fn, ess_threshold, scheme: as in :func:`smc_guidance`.
      x: the initial particles passed to ``kernel.init``.
      num_steps: steps to run (default: the kernel's horizon).

    Returns:
      ``(x, log_weights, log_evidence)``: the final particles, their log weights (use
      ``pg.mc.normalize_weights`` for expectations under the tilted target) and ``log Z_hat``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> sde = pg.diffusion.vp()
        >>> sampler = pg.diffusion.euler_maruyama(sde, lambda x, t: -x, num_steps=50)
        >>> x, lw, log_z = pg.diffusion.smc_guidance_sample(
        ...     jax.random.key(0), sampler, sde.prior_sample(jax.random.key(1), (4000, 1)),
        ...     lambda x, t: x[:, 0], 1.0)  # tilt N(0, 1) by exp(x): N(1, 1)
        >>> abs(float(pg.mc.normalize_weights(lw) @ x[:, 0]) - 1.0) < 0.1
        True
    """
    smc = smc_guidance(kernel, value_fn, alpha, reward_fn, ess_threshold, scheme)
    final, _ = run(smc, key, smc.init(x), _num_steps(kernel, num_steps, "smc_guidance_sample"))
    return final.inner.x, final.log_weights, final.log_evidence

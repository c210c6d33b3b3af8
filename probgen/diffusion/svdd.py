"""Derivative-free guidance by soft value-based decoding (SVDD; Li et al. 2024, "Derivative-Free
Guidance in Continuous and Discrete Diffusion Models with Soft Value-Based Decoding").

Target: the reward-tilted distribution ``p(x_0) exp(r(x_0) / alpha) / Z`` of a pretrained
sampler ``p``. Its optimal denoising policy is the pretrained step reweighted by the soft value
``p(x_s | x_t) exp(v(x_s, s) / alpha)``, with ``v(x_s, s) = alpha log E_p[exp(r(x_0) / alpha) | x_s]``
(so ``v(x, 0) = r(x)``). SVDD approximates it by importance resampling: from each particle draw
``M`` candidates with the pretrained step, keep one with probability
``softmax_m(v(x_s^m, s) / alpha)`` (``alpha = 0``: the best one). As ``M`` grows the step
approaches the optimal policy, and with the exact value the samples approach the tilted
target. The value needs no gradient: a reward of Tweedie's ``x0_hat`` (SVDD-PM), a learned
regressor, or an exact value.

Generic over the sampler: any :class:`probgen.Kernel` whose state has a particle array ``x``
(leading particle axis ``N``) and a time ``t`` (``pg.dynamics.IntegratorState(x, t, step)``, the
state of every diffusion sampler here, continuous or discrete: nothing assumes ``x`` is a
float). Leaves of the state with a leading axis of size ``N`` are per-particle and are selected
per particle; the other leaves (time, step index) are the same for every candidate.
:func:`probgen.diffusion.smc_guidance` is the SMC counterpart with importance weights.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core.checks import static_int
from probgen.core.errors import ArgumentError, SettingError
from probgen.core.validation import check
from probgen.kernels import Kernel, run
from probgen.mc.checks import concrete_value
from probgen.core.keys import particle_keys

ValueFn = Callable[[jax.Array, jax.Array], jax.Array]


def _check_kernel(kernel, where: str) -> Kernel:
    """``kernel`` must be a :class:`probgen.Kernel`."""
    if not isinstance(kernel, Kernel):
        raise ArgumentError(f"{where}: kernel must be a pg.Kernel (a pretrained sampler), got {type(kernel).__name__}")
    return kernel


def _check_particle_state(state, where: str) -> None:
    """The sampler state must carry particles ``x`` (leading axis ``N``) and a time ``t``."""
    missing = [name for name in ("x", "t") if not hasattr(state, name)]
    if missing:
        raise ArgumentError(
            f"{where}: the kernel's state has no {' or '.join(repr(m) for m in missing)} field (got "
            f"{type(state).__name__}); guidance needs a state with particles x of shape (num_particles, ...) "
            "and a time t, such as pg.dynamics.IntegratorState(x, t, step) of the diffusion samplers")
    if jnp.ndim(state.x) < 1:
        raise ArgumentError(f"{where}: the kernel's state x must have a leading particle axis, got shape "
                            f"{jnp.shape(state.x)}")


def _check_alpha(alpha, where: str, allow_zero: bool) -> Any:
    """``alpha`` a real scalar, ``>= 0`` (``> 0`` unless ``allow_zero``); returns its concrete value or None.

    A traced ``alpha`` (under ``vmap`` over temperatures) is checked at run time under ``pg.validate``.
    """
    bound = ">= 0" if allow_zero else "> 0"
    real = (isinstance(alpha, numbers.Real) and not isinstance(alpha, (bool, np.bool_))) or (
        isinstance(alpha, (jax.Array, np.ndarray)) and jnp.ndim(alpha) == 0
        and (jnp.issubdtype(alpha.dtype, jnp.floating) or jnp.issubdtype(alpha.dtype, jnp.integer)))
    if not real:
        raise SettingError(f"{where}: alpha must be a real number {bound} (the reward temperature), got {alpha!r}")
    value = concrete_value(alpha)
    if value is None:
        check((alpha >= 0) if allow_zero else (alpha > 0), f"{where}: alpha must be {bound}, got {{value}}",
              value=alpha)
        return None
    if not (float(value) > 0 or (allow_zero and float(value) == 0)):
        raise SettingError(f"{where}: alpha must be {bound} (the reward temperature), got {alpha!r}")
    return float(value)


def _particle_values(fn: Callable, args: tuple, num: int, where: str, name: str) -> jax.Array:
    """``fn(*args)`` checked to be a ``(num,)`` vector of floats (NaN refused under ``pg.validate``)."""
    out = jnp.asarray(fn(*args))
    if out.shape != (num,):
        raise SettingError(f"{where}: {name} must return one value per particle, shape ({num},), got {out.shape}")
    out = out.astype(jnp.result_type(out, float))
    check(~jnp.any(jnp.isnan(out)), f"{where}: {name} returned NaN for some particle")
    return out


def _particle_leaves(state, num: int) -> list[bool]:
    """Which leaves of ``state`` are per particle (leading axis of size ``num``)."""
    return [jnp.ndim(leaf) >= 1 and jnp.shape(leaf)[0] == num for leaf in jax.tree.leaves(state)]


class SVDDInfo(NamedTuple):
    """Diagnostics of one SVDD step.

    Attributes:
      values: ``(N,)`` soft values ``v(x_s, s)`` of the selected candidates.
      inner: the pretrained kernel's info of the first candidate step (e.g. ``IntegratorInfo(time)``).
    """

    values: jax.Array
    inner: Any


def svdd(kernel: Kernel, value_fn: ValueFn, num_candidates: int, alpha: float = 0.0) -> Kernel:
    """Soft value-based decoding: a pretrained sampler kernel steered by a value function, derivative free.

    Each step draws ``num_candidates`` next states with ``kernel.step`` (independent keys),
    evaluates ``value_fn`` on each and keeps, per particle, one candidate with probability
    ``softmax(v / alpha)`` (``alpha = 0``: the argmax, ties to the first). Li et al. 2024, Alg. 1.

    Args:
      kernel: the pretrained sampler, a :class:`probgen.Kernel` whose state has particles ``x``
        ``(N, ...)`` (any dtype, e.g. int tokens) and a scalar time ``t``.
      value_fn: ``value_fn(x, t) -> (N,)`` the soft value of each particle at time ``t``; at the
        sampler's final time it should be (close to) the reward ``r(x)``.
      num_candidates: ``M >= 1`` candidates per particle and step (``M = 1`` is the pretrained sampler).
      alpha: temperature ``>= 0`` of the tilt ``exp(r / alpha)``; may be a traced scalar (e.g. a
        ``vmap`` over temperatures), then checked under ``pg.validate``.

    Returns:
      A :class:`probgen.Kernel` with the pretrained kernel's ``init``, state and horizon, and
      info :class:`SVDDInfo`.

    Raises:
      SettingError: ``num_candidates < 1``, ``alpha < 0`` or ``value_fn`` returning a wrong shape.
      ArgumentError: ``kernel`` is not a kernel, or its state has no ``x`` or ``t``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> sde = pg.diffusion.vp()
        >>> sampler = pg.diffusion.euler_maruyama(sde, lambda x, t: -x, num_steps=20)  # N(0, 1) data
        >>> value = lambda x, t: x[:, 0]  # push toward larger x: a crude value, no gradient needed
        >>> guided = pg.diffusion.svdd(sampler, value, num_candidates=8, alpha=0.0)
        >>> final, _ = pg.run(guided, jax.random.key(0), guided.init(sde.prior_sample(jax.random.key(1), (200, 1))), 20)
        >>> float(final.x.mean()) > 1.0
        True
    """
    _check_kernel(kernel, "svdd")
    num_candidates = static_int(num_candidates, "num_candidates", "svdd")
    alpha_value = _check_alpha(alpha, "svdd", allow_zero=True)

    def init(*args, **kwargs):
        state = kernel.init(*args, **kwargs)
        _check_particle_state(state, "svdd")
        return state

    def step(key, state):
        _check_particle_state(state, "svdd")
        num = jnp.shape(state.x)[0]
        k_select, k_candidates = jax.random.split(key)
        candidates, infos = jax.vmap(kernel.step, in_axes=(0, None))(
            particle_keys(k_candidates, num_candidates), state)
        values = jax.vmap(lambda x, t: _particle_values(value_fn, (x, t), num, "svdd", "value_fn(x, t)"))(
            candidates.x, candidates.t)  # (M, N)
        if alpha_value == 0.0:
            choice = jnp.argmax(values, axis=0)
        else:
            positive = jnp.asarray(alpha) > 0
            sampled = jax.random.categorical(k_select, values / jnp.where(positive, alpha, 1.0), axis=0)
            choice = sampled if alpha_value is not None else jnp.where(positive, sampled, jnp.argmax(values, axis=0))
        rows = jnp.arange(num)
        is_particle = _particle_leaves(state, num)
        leaves, treedef = jax.tree.flatten(candidates)
        chosen = [leaf[choice, rows] if per else leaf[0] for leaf, per in zip(leaves, is_particle)]
        return jax.tree.unflatten(treedef, chosen), SVDDInfo(values[choice, rows], jax.tree.map(lambda a: a[0], infos))

    return Kernel(init=init, step=step, horizon=kernel.horizon)


def _num_steps(kernel: Kernel, num_steps, where: str) -> int:
    if num_steps is None:
        if kernel.horizon is None:
            raise SettingError(f"{where}: num_steps is needed for a kernel without a horizon")
        return kernel.horizon
    return static_int(num_steps, "num_steps", where)


def svdd_sample(key: jax.Array, kernel: Kernel, x: jax.Array, value_fn: ValueFn, num_candidates: int,
                alpha: float = 0.0, num_steps: int | None = None) -> jax.Array:
    """Run :func:`svdd` from the particles ``x`` (e.g. ``x_T`` drawn from the prior) to the end.

    Args:
      key: PRNG key.
      kernel, value_fn, num_candidates, alpha: as in :func:`svdd`.
      x: the initial particles passed to ``kernel.init``.
      num_steps: steps to run (default: the kernel's horizon).

    Returns:
      The final particles ``x``.

    Example:
        >>> import jax, probgen as pg
        >>> sde = pg.diffusion.vp()
        >>> sampler = pg.diffusion.ddpm(sde, lambda x, t: -x, num_steps=20)
        >>> x = pg.diffusion.svdd_sample(jax.random.key(0), sampler, sde.prior_sample(jax.random.key(1), (100, 1)),
        ...                              lambda x, t: -x[:, 0] ** 2, num_candidates=4)
        >>> x.shape
        (100, 1)
    """
    guided = svdd(kernel, value_fn, num_candidates, alpha)
    final, _ = run(guided, key, guided.init(x), _num_steps(kernel, num_steps, "svdd_sample"))
    return final.x

"""Reverse-time diffusion samplers, each a :class:`probgen.Kernel` driven by ``pg.run``.

All samplers walk the same uniform time grid ``t_i = t_max + i (t_min - t_max) / num_steps``
from ``t_max`` down to ``t_min`` in ``num_steps`` steps. Each is a
:func:`probgen.dynamics.grid_kernel`: the state is ``pg.dynamics.IntegratorState(x, t, step)``
with ``x`` of shape ``(num_particles, *event_shape)``, the step info
``pg.dynamics.IntegratorInfo(time)``, and the Euler–Maruyama and Runge–Kutta updates are those
of :mod:`probgen.dynamics` (the vector fields here are the SDE's reverse and probability-flow
drifts). Every sampler takes the same ``score_fn(x, t)`` (batched over the leading particle
axis, scalar ``t``). Times are computed from the integer step in the dtype of ``x`` (float64
runs stay float64 and end exactly at ``t_min``). Each sampler is a fixed-horizon kernel
(``horizon=num_steps``): ``pg.run`` refuses more steps and, under ``pg.validate``, a step past
the end fails.

Example:
    >>> import jax, probgen as pg
    >>> sde = pg.diffusion.vp()
    >>> gmm = pg.diffusion.gaussian_mixture([0.5, 0.5], [[-2.0], [2.0]], 0.5)
    >>> kernel = pg.diffusion.euler_maruyama(sde, pg.diffusion.gmm_score(gmm, sde), num_steps=100)
    >>> x_T = sde.prior_sample(jax.random.key(0), (256, 1))
    >>> final, info = pg.run(kernel, jax.random.key(1), kernel.init(x_T), 100)
    >>> final.x.shape, int(final.step), round(float(final.t), 4)
    ((256, 1), 100, 0.001)
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.errors import ArgumentError, SettingError
from probgen.core.numerics import as_float
from probgen.diffusion.sde import SDE, ScoreFn, _as_field, checked_score
from probgen.dynamics import euler_maruyama_step, grid_kernel, ode_step
from probgen.dynamics.solvers import check_method
from probgen.kernels import Kernel, grid_time, run


def _check_common(name: str, sde: SDE, num_steps, t_min) -> int:
    """Check the SDE, ``num_steps`` and ``t_min`` every sampler shares; return ``num_steps`` as an int."""
    if not isinstance(sde, SDE):
        raise ArgumentError(f"{name}: sde must be a pg.diffusion.SDE, got {type(sde).__name__}")
    num_steps = static_int(num_steps, "num_steps", name)
    if not (0.0 <= t_min < sde.t_max):
        raise SettingError(f"{name}: t_min must lie in [0, t_max={sde.t_max}), got {t_min!r}")
    return num_steps


def _particles(name: str) -> Callable:
    """``prepare(x)``: ``x`` as a float array of shape ``(num_particles, *event_shape)``, or an error."""

    def prepare(x) -> jax.Array:
        x = as_float(x)
        if x.ndim < 2:
            raise SettingError(
                f"{name}.init: x must have shape (num_particles, *event_shape) with ndim >= 2, got {x.shape}; "
                "for scalar data use shape (N, 1)")
        return x

    return prepare


def _sampler(name: str, sde: SDE, num_steps: int, t_min: float, move: Callable) -> Kernel:
    """The grid kernel from ``t_max`` to ``t_min`` whose step is ``move(key, x, t, s, step)``."""
    return grid_kernel(move, sde.t_max, t_min, num_steps, name, prepare=_particles(name))


def time_grid(sde: SDE, num_steps: int, t_min: float = 1e-3):
    """The time at step index ``i``: ``t_i = t_max + i (t_min - t_max) / num_steps``.

    Returns ``at(i, dtype=None)``, a function of the (traced) integer index giving the time
    in ``dtype`` (default: JAX's default float); ``i = 0`` gives ``t_max`` and
    ``i = num_steps`` gives ``t_min`` exactly (see :func:`probgen.kernels.grid_time`).

    Example:
        >>> import probgen as pg
        >>> grid = pg.diffusion.time_grid(pg.diffusion.vp(), 10, t_min=0.0)
        >>> float(grid(5)), float(grid(10))
        (0.5, 0.0)
    """
    num_steps = static_int(num_steps, "num_steps", "time_grid")

    def at(i, dtype=None):
        return grid_time(i, num_steps, sde.t_max, t_min, jnp.result_type(float) if dtype is None else dtype)

    return at


def _event_norm(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(v.reshape(v.shape[0], -1) ** 2, axis=-1))


def _reverse_sde_move(sde: SDE, score_fn: ScoreFn, num_steps: int, denoise_final: bool) -> Callable:
    """One Euler–Maruyama step of the reverse-time SDE (no noise on the last step if ``denoise_final``)."""
    drift = _as_field(sde.reverse_drift, score_fn)

    def move(key, x, t, s, step):
        scale = sde.diffusion(t)
        if denoise_final:
            scale = jnp.where(step == num_steps - 1, 0.0, scale)
        return euler_maruyama_step(key, drift, scale, t, x, s - t)

    return move


def euler_maruyama(sde: SDE, score_fn: ScoreFn, num_steps: int, t_min: float = 1e-3,
                   denoise_final: bool = True) -> Kernel:
    """Euler–Maruyama integration of the reverse-time SDE ``dx = [f x - g^2 score] dt + g dW``.

    Args:
      sde: the forward :class:`SDE`.
      score_fn: ``score_fn(x, t)``, batched over the leading particle axis.
      num_steps: number of steps from ``t_max`` to ``t_min`` (run the kernel this many times).
      t_min: the final time.
      denoise_final: drop the noise on the last step (return the predicted mean).

    Returns:
      A :class:`probgen.Kernel` with ``init(x_T) -> IntegratorState``.

    Example:
        >>> import jax, probgen as pg
        >>> sde = pg.diffusion.vp()
        >>> k = pg.diffusion.euler_maruyama(sde, lambda x, t: -x, num_steps=10)
        >>> s, _ = pg.run(k, jax.random.key(0), k.init(sde.prior_sample(jax.random.key(1), (5, 2))), 10)
        >>> s.x.shape
        (5, 2)
    """
    num_steps = _check_common("euler_maruyama", sde, num_steps, t_min)
    score_fn = checked_score(score_fn, "euler_maruyama")
    return _sampler("euler_maruyama", sde, num_steps, t_min, _reverse_sde_move(sde, score_fn, num_steps, denoise_final))


def predictor_corrector(sde: SDE, score_fn: ScoreFn, num_steps: int, t_min: float = 1e-3,
                        snr: float = 0.16, num_corrector_steps: int = 1,
                        denoise_final: bool = True) -> Kernel:
    """Predictor–corrector sampler: Langevin corrector steps, then an Euler–Maruyama predictor.

    The Langevin step size is ``2 (snr mean||z|| / mean||score||)^2`` with norms averaged over
    the particle batch (Song et al. 2021, Algorithms 4–5, with the VP factor ``alpha_i`` taken as 1).
    The step size therefore couples the particles of one batch through a scalar.

    Args:
      sde, score_fn, num_steps, t_min, denoise_final: as in :func:`euler_maruyama`.
      snr: signal-to-noise ratio setting the Langevin step size.
      num_corrector_steps: Langevin steps at each time before the predictor.

    Returns:
      A :class:`probgen.Kernel` with ``init(x_T) -> IntegratorState``.

    Example:
        >>> import jax, probgen as pg
        >>> sde = pg.diffusion.ve()
        >>> k = pg.diffusion.predictor_corrector(sde, lambda x, t: -x / (1 + sde.sigma(t)**2), 20)
        >>> s, _ = pg.run(k, jax.random.key(0), k.init(sde.prior_sample(jax.random.key(1), (4, 1))), 20)
        >>> s.x.shape
        (4, 1)
    """
    num_corrector_steps = static_int(num_corrector_steps, "num_corrector_steps", "predictor_corrector", minimum=0)
    if not snr > 0:
        raise SettingError(f"predictor_corrector: snr must be positive, got {snr!r}")
    num_steps = _check_common("predictor_corrector", sde, num_steps, t_min)
    score_fn = checked_score(score_fn, "predictor_corrector")
    predictor = _reverse_sde_move(sde, score_fn, num_steps, denoise_final)

    def langevin(x, key, t):
        z = jax.random.normal(key, x.shape, x.dtype)
        grad = score_fn(x, t)
        # Batch-averaged norms (as in Song et al.): a particle-dependent step size would bias
        # the unadjusted Langevin chain's invariant distribution.
        step_size = 2.0 * (snr * jnp.mean(_event_norm(z)) / jnp.maximum(jnp.mean(_event_norm(grad)), 1e-12)) ** 2
        return x + step_size * grad + jnp.sqrt(2.0 * step_size) * z, None

    def move(key, x, t, s, step):
        k_corr, k_pred = jax.random.split(key)
        if num_corrector_steps > 0:
            x, _ = jax.lax.scan(lambda c, k: langevin(c, k, t), x, jax.random.split(k_corr, num_corrector_steps))
        return predictor(k_pred, x, t, s, step)

    return _sampler("predictor_corrector", sde, num_steps, t_min, move)


def _tweedie(sde: SDE, score_fn: ScoreFn, x, t, s):
    """Tweedie's ``x0_hat`` and ``eps_hat = -sigma_t score``, and the schedule between grid times ``s < t``.

    Returns ``(x0_hat, eps_hat, alpha_t, sigma_t, alpha_s, sigma_s, cond_var)`` with
    ``cond_var = sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2`` the variance of ``x_t | x_s``.
    """
    a_t, sg_t, a_s, sg_s = sde.alpha(t), sde.sigma(t), sde.alpha(s), sde.sigma(s)
    eps_hat = -sg_t * score_fn(x, t)
    x0_hat = (x - sg_t * eps_hat) / a_t
    cond_var = jnp.maximum(sg_t**2 - (a_t / a_s) ** 2 * sg_s**2, 0.0)
    return x0_hat, eps_hat, a_t, sg_t, a_s, sg_s, cond_var


def ddim(sde: SDE, score_fn: ScoreFn, num_steps: int, t_min: float = 1e-3, eta: float = 0.0) -> Kernel:
    """DDIM (Song, Meng & Ermon 2021) on the SDE's marginals, with stochasticity ``eta``.

    From ``t`` to ``s < t``: ``x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z`` with
    ``c = eta * sigma_s * sigma_{t|s} / sigma_t`` and ``sigma_{t|s}^2 = sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2``.
    ``eta = 0`` is deterministic (a discretization of the probability-flow ODE); ``eta = 1``
    samples the DDPM posterior. Works for VP, sub-VP and VE schedules.

    Args:
      sde, score_fn, num_steps, t_min: as in :func:`euler_maruyama`.
      eta: in ``[0, 1]``.

    Returns:
      A :class:`probgen.Kernel` with ``init(x_T) -> IntegratorState``.

    Example:
        >>> import jax, probgen as pg
        >>> sde = pg.diffusion.subvp()
        >>> k = pg.diffusion.ddim(sde, lambda x, t: -x, num_steps=10, eta=0.5)
        >>> s, info = pg.run(k, jax.random.key(0), k.init(sde.prior_sample(jax.random.key(1), (3, 2))), 10)
        >>> s.x.shape, round(float(info.time), 4)
        ((3, 2), 0.001)
    """
    num_steps = _check_common("ddim", sde, num_steps, t_min)
    score_fn = checked_score(score_fn, "ddim")
    if not 0.0 <= eta <= 1.0:
        raise SettingError(f"ddim: eta must lie in [0, 1], got {eta!r}")

    def move(key, x, t, s, step):
        x0_hat, eps_hat, _, sg_t, a_s, sg_s, cond_var = _tweedie(sde, score_fn, x, t, s)
        c = eta * sg_s * jnp.sqrt(cond_var) / sg_t
        x_new = a_s * x0_hat + jnp.sqrt(jnp.maximum(sg_s**2 - c**2, 0.0)) * eps_hat
        if eta > 0:
            x_new = x_new + c * jax.random.normal(key, x.shape, x.dtype)
        return x_new

    return _sampler("ddim", sde, num_steps, t_min, move)


def ddpm(sde: SDE, score_fn: ScoreFn, num_steps: int, t_min: float = 1e-3) -> Kernel:
    """DDPM ancestral sampling (Ho et al. 2020): draw ``x_s ~ q(x_s | x_t, x0_hat)``.

    The Gaussian posterior of the forward process between grid times ``s < t`` has mean
    ``(alpha_t/alpha_s) sigma_s^2/sigma_t^2 x_t + alpha_s sigma_{t|s}^2/sigma_t^2 x0_hat`` and variance
    ``sigma_s^2 sigma_{t|s}^2 / sigma_t^2``; ``x0_hat`` is Tweedie's estimate from the score.
    No noise is added on the last step.

    Args:
      sde, score_fn, num_steps, t_min: as in :func:`euler_maruyama`.

    Returns:
      A :class:`probgen.Kernel` with ``init(x_T) -> IntegratorState``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> k = pg.diffusion.ddpm(pg.diffusion.vp_cosine(), lambda x, t: -x, num_steps=10)
        >>> s, _ = pg.run(k, jax.random.key(0), k.init(jnp.zeros((3, 1))), 10)
        >>> int(s.step), bool(jnp.all(jnp.isfinite(s.x)))
        (10, True)
    """
    num_steps = _check_common("ddpm", sde, num_steps, t_min)
    score_fn = checked_score(score_fn, "ddpm")

    def move(key, x, t, s, step):
        x0_hat, _, a_t, sg_t, a_s, sg_s, cond_var = _tweedie(sde, score_fn, x, t, s)
        mean = (a_t / a_s) * sg_s**2 / sg_t**2 * x + a_s * cond_var / sg_t**2 * x0_hat
        std = jnp.where(step == num_steps - 1, 0.0, jnp.sqrt(sg_s**2 * cond_var) / sg_t)
        return mean + std * jax.random.normal(key, x.shape, x.dtype)

    return _sampler("ddpm", sde, num_steps, t_min, move)


def probability_flow(sde: SDE, score_fn: ScoreFn, num_steps: int, t_min: float = 1e-3,
                     method: str = "heun") -> Kernel:
    """Deterministic sampler: integrate the probability-flow ODE ``dx/dt = f x - g^2 score / 2``.

    Args:
      sde, score_fn, num_steps, t_min: as in :func:`euler_maruyama`.
      method: ``"euler"``, ``"heun"`` (second order, two score calls per step) or ``"rk4"``
        (fourth order, four calls); see :func:`probgen.dynamics.ode_step`.

    Returns:
      A :class:`probgen.Kernel` with ``init(x_T) -> IntegratorState`` (the key is unused).

    Example:
        >>> import jax, probgen as pg
        >>> sde = pg.diffusion.vp()
        >>> k = pg.diffusion.probability_flow(sde, lambda x, t: -x, num_steps=10, method="rk4")
        >>> s, _ = pg.run(k, jax.random.key(0), k.init(sde.prior_sample(jax.random.key(1), (3, 2))), 10)
        >>> s.x.shape
        (3, 2)
    """
    num_steps = _check_common("probability_flow", sde, num_steps, t_min)
    score_fn = checked_score(score_fn, "probability_flow")
    check_method(method, "probability_flow")
    velocity = _as_field(sde.ode_drift, score_fn)

    def move(key, x, t, s, step):
        return ode_step(velocity, t, x, s - t, method)

    return _sampler("probability_flow", sde, num_steps, t_min, move)


SAMPLERS = {
    "euler_maruyama": euler_maruyama,
    "predictor_corrector": predictor_corrector,
    "ddpm": ddpm,
    "ddim": ddim,
    "probability_flow": probability_flow,
}


def reverse_sample(key: jax.Array, sde: SDE, score_fn: ScoreFn, shape, sampler: str = "euler_maruyama",
                   num_steps: int = 500, t_min: float = 1e-3, **options) -> jax.Array:
    """Sample by reversing the diffusion: ``x_T`` from the prior, then ``num_steps`` steps of a sampler.

    The one-shot driver of the samplers here: it builds the named kernel, draws
    ``x_T ~ N(0, prior_std^2 I)`` and runs the kernel from ``t_max`` down to ``t_min``.

    Args:
      key: PRNG key.
      sde: the forward :class:`SDE`.
      score_fn: ``score_fn(x, t)``.
      shape: ``(num_particles, *event_shape)``.
      sampler: one of ``"euler_maruyama"``, ``"predictor_corrector"``, ``"ddpm"``, ``"ddim"``,
        ``"probability_flow"``.
      num_steps, t_min: the time grid.
      **options: passed to the sampler factory (``eta``, ``snr``, ``method``, ...).

    Returns:
      Samples of shape ``shape`` at time ``t_min``.

    Example:
        >>> import jax, probgen as pg
        >>> sde = pg.diffusion.vp()
        >>> gmm = pg.diffusion.gaussian_mixture([1.0], [[3.0]], 1.0)
        >>> score = pg.diffusion.gmm_score(gmm, sde)
        >>> x = pg.diffusion.reverse_sample(jax.random.key(0), sde, score, (2000, 1), "ddim", 100)
        >>> abs(float(x.mean()) - 3.0) < 0.2
        True
    """
    if sampler not in SAMPLERS:
        raise SettingError(f"reverse_sample: unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    kernel = SAMPLERS[sampler](sde, score_fn, num_steps, t_min, **options)
    k_prior, k_run = jax.random.split(key)
    state = kernel.init(sde.prior_sample(k_prior, shape))
    final, _ = run(kernel, k_run, state, num_steps)
    return final.x

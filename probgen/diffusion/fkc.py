"""Feynman–Kac correctors: SMC-weighted diffusion sampling of products and powers of scores.

Target at every time ``q_t ∝ prod_i p_{i,t}^{beta_i}`` (annealing: one score, ``beta``;
product of experts: two scores, betas 1, 1; guidance: ``p_t^{1-w} p_t(x|c)^w``). Particles
follow the reverse SDE with the combined score ``S = sum_i beta_i s_i``; each step multiplies
their weights by ``exp(dt * g^2/2 * (||S||^2 - sum_i beta_i ||s_i||^2))``, the Itô/Feynman–Kac
correction that makes the weighted particles exact in the continuous limit (Skreta et al.
2025, "Feynman-Kac Correctors in Diffusion: Annealing, Guidance, and Product of Experts",
Props. 3.2–3.4). For one score this is ``g^2 beta (beta - 1)/2 ||s||^2``, for a product of two
``g^2 <s_1, s_2>``. Resampling (``pg.mc.maybe_resample``) fires when the ESS drops below
``ess_threshold * num_particles``; resampled particles share the mean weight. Particle-independent
terms of the weight are dropped, so ``log_weights`` are relative (not an evidence estimate).

Derivation sketch: with drift ``v = -f x + g^2 S`` in reverse time ``u = t_max - t`` and
weights ``dlog w = h du``, the weighted density obeys ``d rho/du = -div(v rho) + g^2/2 Lap rho + h rho``;
asking ``rho ∝ q`` and using each ``p_i``'s Fokker–Planck equation cancels every Laplacian term
and leaves ``h`` above (plus particle-independent constants).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from probgen.core.errors import SettingError
from probgen.diffusion.samplers import _check_common, _particles
from probgen.diffusion.sde import SDE, ScoreFn, checked_score
from probgen.dynamics import euler_maruyama_step, grid_times
from probgen.kernels import Kernel, run
from probgen.mc.resampling import check_ess_threshold, check_scheme, ess, maybe_resample


class FKCState(NamedTuple):
    """Particles, their log weights and the step index."""

    x: jax.Array
    log_weights: jax.Array
    step: jax.Array


class FKCInfo(NamedTuple):
    """Per-step diagnostics: ESS before resampling and whether resampling fired."""

    ess: jax.Array
    resampled: jax.Array


def _sum_event(v):
    return jnp.sum(v.reshape(v.shape[0], -1), axis=-1)


def feynman_kac(sde: SDE, score_fns: Sequence[ScoreFn], betas: Sequence[float], num_steps: int,
                t_min: float = 1e-3, ess_threshold: float = 0.5, scheme: str = "systematic") -> Kernel:
    """SMC kernel for the target ``prod_i p_i^{beta_i}`` (Feynman–Kac corrector, Skreta et al. 2025).

    Args:
      sde: the forward :class:`SDE` shared by all scores.
      score_fns: the pretrained scores ``s_i(x, t)``.
      betas: their exponents (may be negative, e.g. for guidance; the sum must be positive).
      num_steps, t_min: the time grid, as for the samplers.
      ess_threshold: resample when ``ESS < ess_threshold * num_particles`` (0 never, 1 always),
        via ``pg.mc.maybe_resample``; a number in ``[0, 1]`` (checked by ``pg.mc``).
      scheme: resampling scheme of ``pg.mc.resample``.

    Returns:
      A :class:`probgen.Kernel` with ``init(x_T, log_weights=None) -> FKCState``.

    Example:
        >>> import jax, probgen as pg
        >>> sde = pg.diffusion.vp()
        >>> k = pg.diffusion.feynman_kac(sde, [lambda x, t: -x], [2.0], num_steps=10)
        >>> s, info = pg.run(k, jax.random.key(0), k.init(sde.prior_sample(jax.random.key(1), (64, 1))), 10)
        >>> s.log_weights.shape
        (64,)
    """
    num_steps = _check_common("feynman_kac", sde, num_steps, t_min)
    score_fns = tuple(checked_score(fn, f"feynman_kac score_fns[{i}]") for i, fn in enumerate(score_fns))
    betas = tuple(float(b) for b in betas)
    if len(score_fns) == 0 or len(score_fns) != len(betas):
        raise SettingError(f"feynman_kac: need one beta per score, got {len(score_fns)} scores and {len(betas)} betas")
    if sum(betas) <= 0:
        raise SettingError(f"feynman_kac: the betas must sum to a positive number, got {betas}")
    check_ess_threshold(ess_threshold, "feynman_kac")  # [0, 1]: 0 never resamples, 1 always
    check_scheme(scheme, "feynman_kac")
    times = grid_times("feynman_kac", num_steps, sde.t_max, t_min)
    prepare = _particles("feynman_kac")

    def init(x, log_weights=None):
        x = prepare(x)
        if log_weights is None:
            log_weights = jnp.zeros(x.shape[:1], x.dtype)
        return FKCState(x, log_weights, jnp.zeros((), jnp.int32))

    def step(key, state):
        k_move, k_resample = jax.random.split(key)
        t, s = times(state.step, state.x.dtype)
        x = state.x
        scores = [fn(x, t) for fn in score_fns]
        combined = sum(b * sc for b, sc in zip(betas, scores))
        # Feynman–Kac weight (left-point rule), Skreta et al. 2025; the reverse step is t -> s < t.
        log_increment = 0.5 * sde.g2(t) * (t - s) * (
            _sum_event(combined**2) - sum(b * _sum_event(sc**2) for b, sc in zip(betas, scores)))
        drift = sde.reverse_drift(lambda *_: combined, x, t)  # the reverse SDE of the combined score
        x_new = euler_maruyama_step(k_move, lambda *_: drift, sde.diffusion, t, x, s - t)
        log_weights = state.log_weights + log_increment
        current_ess = ess(log_weights)
        x_new, log_weights, resampled, _ = maybe_resample(k_resample, x_new, log_weights, ess_threshold, scheme)
        return FKCState(x_new, log_weights, state.step + 1), FKCInfo(current_ess, resampled)

    return Kernel(init=init, step=step, horizon=num_steps)


def fkc_sample(key: jax.Array, sde: SDE, score_fns: Sequence[ScoreFn], betas: Sequence[float], shape,
               num_steps: int = 500, t_min: float = 1e-3, ess_threshold: float = 0.5,
               scheme: str = "systematic") -> tuple[jax.Array, jax.Array]:
    """Run :func:`feynman_kac` from ``x_T ~ N(0, prior_std^2 / sum(betas))`` (the product of the priors).

    Returns:
      ``(x, log_weights)``: weighted particles at ``t_min``; use ``pg.mc.normalize_weights(log_weights)``
      for expectations or ``pg.mc.resample`` for an unweighted set.

    Example:
        >>> import jax, probgen as pg
        >>> sde = pg.diffusion.vp()
        >>> gmm = pg.diffusion.gaussian_mixture([1.0], [[0.0]], 1.0)
        >>> x, lw = pg.diffusion.fkc_sample(jax.random.key(1), sde, [pg.diffusion.gmm_score(gmm, sde)], [2.0], (2000, 1), 200)
        >>> w = pg.mc.normalize_weights(lw)
        >>> abs(float(w @ x[:, 0] ** 2) - 0.5) < 0.1  # N(0, 1)^2 ∝ N(0, 1/2)
        True
    """
    kernel = feynman_kac(sde, score_fns, betas, num_steps, t_min, ess_threshold, scheme)
    k_prior, k_run = jax.random.split(key)
    x_T = sde.prior_sample(k_prior, shape) / jnp.sqrt(sum(float(b) for b in betas))
    final, _ = run(kernel, k_run, kernel.init(x_T), num_steps)
    return final.x, final.log_weights


def anneal(score_fn: ScoreFn, beta: float) -> tuple[tuple[ScoreFn], tuple[float]]:
    """``(score_fns, betas)`` for the annealed target ``p^beta``.

    Example:
        >>> import probgen as pg
        >>> scores, betas = pg.diffusion.anneal(lambda x, t: -x, 2.0)
        >>> betas
        (2.0,)
    """
    return (score_fn,), (float(beta),)


def product_of_experts(*score_fns: ScoreFn) -> tuple[tuple[ScoreFn, ...], tuple[float, ...]]:
    """``(score_fns, betas)`` for the product ``prod_i p_i``.

    Example:
        >>> import probgen as pg
        >>> scores, betas = pg.diffusion.product_of_experts(lambda x, t: -x, lambda x, t: 1 - x)
        >>> betas
        (1.0, 1.0)
    """
    return tuple(score_fns), (1.0,) * len(score_fns)


def fkc_guidance(uncond_score_fn: ScoreFn, cond_score_fn: ScoreFn, scale: float):
    """``(score_fns, betas)`` for the guided target ``p^{1-w} p(x|c)^w`` (the CFG drift, corrected).

    Example:
        >>> import probgen as pg
        >>> scores, betas = pg.diffusion.fkc_guidance(lambda x, t: -x, lambda x, t: 1 - x, 2.0)
        >>> betas
        (-1.0, 2.0)
    """
    return (uncond_score_fn, cond_score_fn), (1.0 - float(scale), float(scale))

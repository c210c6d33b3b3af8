"""Variational diffusion models: a learned log-SNR schedule and the diffusion ELBO.

Kingma, Salimans, Poole & Ho 2021, "Variational Diffusion Models" (VDM). The forward process
is variance preserving in log-SNR form: ``z_t = alpha_t x + sigma_t eps`` with
``alpha_t^2 = sigmoid(-gamma(t))`` and ``sigma_t^2 = sigmoid(gamma(t))``, so
``SNR(t) = alpha_t^2 / sigma_t^2 = exp(-gamma(t))``. The schedule ``gamma`` is monotone
increasing on ``[0, 1]`` by construction (:func:`vdm_schedule`): positive weights, endpoints
``gamma(0) = gamma_0`` and ``gamma(1) = gamma_0 + softplus(gamma_gap)``, both learnable.

Data model. ``x`` is continuous in ``R^D``. The generative model draws ``z_1 ~ N(0, I)``,
runs the reverse process of the denoiser ``eps_fn(denoiser_params, z, gamma) -> eps_hat``
down to ``z_0``, and decodes with the Gaussian ``p(x | z_0) = N(z_0 / alpha_0, exp(gamma_0) I)``
(``sigma_0^2 / alpha_0^2 = exp(gamma_0)``; VDM's discretized decoder is for 8-bit data and is
not provided). Then ``-log p(x) <= L_prior + L_recon + L_diffusion`` with

- ``L_prior = KL(q(z_1 | x) || N(0, I))``, closed form;
- ``L_recon = E_{q(z_0|x)}[-log p(x | z_0)] = D/2 (1 + log 2 pi + gamma_0)``, closed form;
- continuous time: ``L_inf = 1/2 E_{t ~ U(0,1), eps}[gamma'(t) ||eps - eps_hat(z_t, gamma(t))||^2]``;
- ``T`` discrete steps ``s = (i-1)/T < t = i/T``:
  ``L_T = T/2 E_{i ~ U{1..T}, eps}[expm1(gamma(t) - gamma(s)) ||eps - eps_hat(z_t, gamma(t))||^2]``,
  the bound of the ancestral (DDPM) model ``p(z_s | z_t) = q(z_s | z_t, x = x_hat(z_t))``;
  ``L_T >= L_inf`` and ``L_T -> L_inf`` as ``T`` grows (more steps, a tighter bound).

The denoiser is conditioned on ``gamma(t)``, not on ``t``: the exact ``E[eps | z_t]`` is a
function of ``(z_t, gamma_t)`` alone, so by the change of variables ``gamma = gamma(t)``
``L_inf = 1/2 int_{gamma_0}^{gamma_1} E||eps - eps_hat(z_gamma, gamma)||^2 d gamma`` depends on the
schedule only through its endpoints (VDM's invariance result); the interior only changes the variance of
the Monte Carlo estimate. With the exact denoiser the bound is tight in the limit
``gamma_0 -> -inf``, ``gamma_1 -> inf`` (the I-MMSE relation; Kong, Brekelmans & Ver Steeg 2023,
"Information-Theoretic Diffusion"): the gap left is set by the endpoints alone. The bound is on
the model's density, which is the data density only in that limit (the decoder smooths the data by
about ``2 exp(gamma_0)`` in variance and the prior ignores ``alpha_1 x``), so with loose endpoints the
ELBO of a single point may exceed its data log density; on average over the data it cannot.

Schedule training (:func:`vdm_loss`): ``"elbo"`` trains every parameter on the ELBO;
``"variance"`` follows VDM's variance minimization: the denoiser and the endpoints on the ELBO, the
interior of the schedule on the mean square of the per-example diffusion-loss estimate (whose
gradient is the gradient of its variance, the mean being invariant to the interior).
:func:`vdm_sde` and :func:`vdm_score` turn a trained model into a :class:`SDE` and a score for
every sampler of :mod:`probgen.diffusion`.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.errors import ArgumentError, SettingError
from probgen.diffusion.losses import _data_batch, _sum_event, score_from_model
from probgen.diffusion.sde import SDE, ScoreFn, _bcast
from probgen.core.keys import particle_keys

EpsFn = Callable[[object, jax.Array, jax.Array], jax.Array]

SCHEDULE_KEYS = ("gamma_0", "gamma_gap", "slope", "hidden_in", "hidden_bias", "hidden_out")
_INTERIOR_KEYS = ("slope", "hidden_in", "hidden_bias", "hidden_out")
SCHEDULE_TRAININGS = ("elbo", "variance")


def _softplus_inverse(y: float) -> float:
    return float(y + math.log(-math.expm1(-y)))


def vdm_schedule(gamma_0: float = -13.3, gamma_1: float = 5.0, num_hidden: int = 8, dtype=None) -> dict:
    """Parameters of a monotone log-SNR schedule ``gamma(t)`` on ``[0, 1]``, initialized near linear.

    ``gamma(t) = gamma_0 + softplus(gamma_gap) * (h(t) - h(0)) / (h(1) - h(0))`` with the
    monotone network ``h(t) = softplus(slope) t + sum_k softplus(out_k) sigmoid(softplus(in_k) t + bias_k)``
    (all multiplicative weights positive, as VDM's schedule network). ``num_hidden = 0`` is the
    linear schedule between learnable endpoints. The hidden units start with small output
    weights (a schedule close to linear) and sigmoid centers spread over ``[0, 1]``.

    Args:
      gamma_0: ``gamma(0)``, the log of ``1 / SNR`` at the data end (VDM's default ``-13.3``).
      gamma_1: ``gamma(1) > gamma_0`` (VDM's default ``5``).
      num_hidden: sigmoid units bending the schedule (``>= 0``).
      dtype: floating dtype of the parameters (default: JAX's default float).

    Returns:
      A dict with keys ``gamma_0, gamma_gap, slope`` (scalars) and
      ``hidden_in, hidden_bias, hidden_out`` (``(num_hidden,)``): the ``"schedule"`` entry of
      the VDM parameters ``{"denoiser": ..., "schedule": ...}``.

    Raises:
      SettingError: ``gamma_1 <= gamma_0`` or a negative ``num_hidden``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> schedule = pg.diffusion.vdm_schedule(-10.0, 6.0, num_hidden=4)
        >>> [round(float(g), 3) for g in pg.diffusion.vdm_gamma(schedule, jnp.array([0.0, 1.0]))]
        [-10.0, 6.0]
    """
    num_hidden = static_int(num_hidden, "num_hidden", "vdm_schedule", minimum=0)
    if not (isinstance(gamma_0, (int, float)) and isinstance(gamma_1, (int, float)) and gamma_1 > gamma_0):
        raise SettingError(f"vdm_schedule: gamma_1 must be a number above gamma_0 (gamma increases from data "
                           f"to noise), got gamma_0={gamma_0!r}, gamma_1={gamma_1!r}")
    dtype = jnp.result_type(float) if dtype is None else dtype
    sharpness = 10.0
    centers = (jnp.arange(num_hidden, dtype=dtype) + 0.5) / max(num_hidden, 1)
    return {
        "gamma_0": jnp.asarray(gamma_0, dtype),
        "gamma_gap": jnp.asarray(_softplus_inverse(gamma_1 - gamma_0), dtype),
        "slope": jnp.asarray(_softplus_inverse(1.0), dtype),
        "hidden_in": jnp.full((num_hidden,), _softplus_inverse(sharpness), dtype),
        "hidden_bias": -sharpness * centers,
        "hidden_out": jnp.full((num_hidden,), -6.0, dtype),
    }


def _check_schedule(schedule, where: str) -> None:
    if not isinstance(schedule, dict) or any(k not in schedule for k in SCHEDULE_KEYS):
        have = sorted(schedule) if isinstance(schedule, dict) else type(schedule).__name__
        raise ArgumentError(f"{where}: the schedule parameters must be the dict of pg.diffusion.vdm_schedule "
                            f"with keys {SCHEDULE_KEYS}, got {have}")


def _check_params(params, where: str):
    if not isinstance(params, dict) or "denoiser" not in params or "schedule" not in params:
        have = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ArgumentError(f"{where}: params must be a dict {{'denoiser': ..., 'schedule': vdm_schedule(...)}}, "
                            f"got {have}")
    _check_schedule(params["schedule"], where)
    return params["denoiser"], params["schedule"]


def _monotone_shape(schedule: dict, t: jax.Array) -> jax.Array:
    """The normalized monotone network ``(h(t) - h(0)) / (h(1) - h(0))``, elementwise in ``t``."""

    def h(u):
        hidden = jax.nn.sigmoid(jax.nn.softplus(schedule["hidden_in"]) * u[..., None] + schedule["hidden_bias"])
        return jax.nn.softplus(schedule["slope"]) * u + jnp.sum(jax.nn.softplus(schedule["hidden_out"]) * hidden, -1)

    ends = h(jnp.array([0.0, 1.0], jnp.result_type(t)))
    return (h(t) - ends[0]) / (ends[1] - ends[0])


def vdm_gamma(schedule: dict, t) -> jax.Array:
    """The log-SNR schedule ``gamma(t) = -log SNR(t)`` at times ``t`` in ``[0, 1]`` (any shape).

    Example:
        >>> import probgen as pg
        >>> round(float(pg.diffusion.vdm_gamma(pg.diffusion.vdm_schedule(num_hidden=0), 0.5)), 3)
        -4.15
    """
    _check_schedule(schedule, "vdm_gamma")
    t = jnp.asarray(t, jnp.result_type(t, schedule["gamma_0"], float))
    return schedule["gamma_0"] + jax.nn.softplus(schedule["gamma_gap"]) * _monotone_shape(schedule, t)


def _gamma_and_slope(schedule: dict, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``gamma(t)`` and ``gamma'(t)`` (one forward-mode pass; the schedule is elementwise in ``t``)."""
    return jax.jvp(lambda u: vdm_gamma(schedule, u), (t,), (jnp.ones_like(t),))


def vdm_sde(schedule: dict) -> SDE:
    """The schedule as a variance-preserving :class:`SDE` on ``[0, 1]``, for the samplers.

    ``alpha(t)^2 = sigmoid(-gamma(t))``, ``sigma(t)^2 = sigmoid(gamma(t))``,
    ``f(t) = d log alpha / dt = -sigma(t)^2 gamma'(t) / 2`` and ``g(t)^2 = sigma(t)^2 gamma'(t)``.

    Example:
        >>> import probgen as pg
        >>> sde = pg.diffusion.vdm_sde(pg.diffusion.vdm_schedule())
        >>> round(float(sde.alpha(0.0) ** 2 + sde.sigma(0.0) ** 2), 6)
        1.0
    """
    _check_schedule(schedule, "vdm_sde")

    def rate(t):  # g(t)^2 = sigma(t)^2 gamma'(t)
        gamma, slope = _gamma_and_slope(schedule, jnp.asarray(t, jnp.result_type(t, schedule["gamma_0"], float)))
        return jax.nn.sigmoid(gamma) * slope

    return SDE(
        name="vdm",
        f=lambda t: -0.5 * rate(t),
        g2=rate,
        alpha=lambda t: jnp.sqrt(jax.nn.sigmoid(-vdm_gamma(schedule, t))),
        sigma=lambda t: jnp.sqrt(jax.nn.sigmoid(vdm_gamma(schedule, t))),
        prior_std=1.0,
        t_max=1.0,
    )


def vdm_score(eps_fn: EpsFn, params: dict) -> ScoreFn:
    """A sampler-ready ``score_fn(x, t) = -eps_hat(x, gamma(t)) / sigma(t)`` of a VDM, for :func:`vdm_sde`.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> params = {"denoiser": None, "schedule": pg.diffusion.vdm_schedule()}
        >>> exact = lambda p, z, g: jnp.sqrt(jax.nn.sigmoid(g))[:, None] * z  # N(0, I) data
        >>> pg.diffusion.vdm_score(exact, params)(jnp.ones((3, 2)), 0.5).round(6).tolist()[0]  # score of N(0, I)
        [-1.0, -1.0]
    """
    denoiser, schedule = _check_params(params, "vdm_score")
    model = lambda p, x, t: eps_fn(p, x, vdm_gamma(schedule, t))  # noqa: E731
    return score_from_model(vdm_sde(schedule), model, denoiser, "eps")


def _endpoint_terms(schedule: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``L_prior`` and ``L_recon`` per example (closed forms, nats)."""
    gamma_0 = schedule["gamma_0"]
    gamma_1 = gamma_0 + jax.nn.softplus(schedule["gamma_gap"])
    # KL(N(alpha_1 x, sigma_1^2) || N(0, 1)) per coordinate, with sigma_1^2 - 1 = -alpha_1^2.
    alpha2 = jax.nn.sigmoid(-gamma_1)
    prior = 0.5 * _sum_event(alpha2 * (x**2 - 1.0) + jax.nn.softplus(-gamma_1))
    size = math.prod(x.shape[1:])
    recon = jnp.full(x.shape[:1], 0.5 * size * (1.0 + math.log(2 * math.pi)), x.dtype) + 0.5 * size * gamma_0
    return prior.astype(x.dtype), recon.astype(x.dtype)


def _diffusion_term(eps_fn: EpsFn, denoiser, schedule: dict, x: jax.Array, u: jax.Array, eps: jax.Array,
                    num_steps: int | None, where: str) -> jax.Array:
    """One draw of the diffusion loss per example from uniforms ``u`` in ``[0, 1)`` and noise ``eps``."""
    if num_steps is None:
        gamma_t, slope = _gamma_and_slope(schedule, u)
        weight = 0.5 * slope
    else:
        index = jnp.minimum(jnp.floor(u * num_steps), num_steps - 1) + 1.0  # i in {1, ..., T}
        gamma_t = vdm_gamma(schedule, index / num_steps)
        gamma_s = vdm_gamma(schedule, (index - 1.0) / num_steps)
        weight = 0.5 * num_steps * jnp.expm1(gamma_t - gamma_s)
    z = _bcast(jnp.sqrt(jax.nn.sigmoid(-gamma_t)), x) * x + _bcast(jnp.sqrt(jax.nn.sigmoid(gamma_t)), x) * eps
    eps_hat = eps_fn(denoiser, z.astype(x.dtype), gamma_t.astype(x.dtype))
    if jnp.shape(eps_hat) != x.shape:
        raise SettingError(f"{where}: eps_fn(params, z, gamma) must return an array of z's shape {x.shape}, "
                           f"got {jnp.shape(eps_hat)}")
    return (weight * _sum_event((eps - eps_hat) ** 2)).astype(x.dtype)


def _check_num_steps(num_steps, where: str) -> int | None:
    return None if num_steps is None else static_int(num_steps, "num_steps", where)


def vdm_loss(eps_fn: EpsFn, num_steps: int | None = None, schedule_training: str = "elbo") -> Callable:
    """The VDM negative ELBO as ``loss(params, key, batch)``, in nats per example (Kingma et al. 2021).

    One ``(t, eps)`` draw per example; the times of a batch are low-discrepancy,
    ``t_i = (u + i / B) mod 1`` with one uniform ``u`` (each ``t_i`` is uniform, so the loss stays
    unbiased; VDM's low-discrepancy sampler).

    Args:
      eps_fn: ``eps_fn(denoiser_params, z, gamma) -> eps_hat`` with ``z`` of shape
        ``(B, *event)`` and ``gamma`` the log-SNR ``(B,)``.
      num_steps: ``None`` for the continuous-time loss ``L_inf``, or ``T`` for the discrete-time
        ``L_T`` (see the module docstring).
      schedule_training: ``"elbo"`` (every parameter on the ELBO) or ``"variance"`` (the
        interior of the schedule on the mean square of the diffusion-loss estimate, as VDM;
        two denoiser passes per step). The loss value is the negative ELBO either way.

    Returns:
      ``loss(params, key, batch) -> scalar`` with ``params = {"denoiser": ..., "schedule":
      vdm_schedule(...)}``, ready for ``pg.fit(loss, params, optimizer, key, data=x)``.

    Raises:
      SettingError: an unknown ``schedule_training``, a bad ``num_steps``, or ``eps_fn``
        returning the wrong shape. ArgumentError: ``params`` not of that form.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> eps_fn = lambda w, z, gamma: w * z
        >>> loss = pg.diffusion.vdm_loss(eps_fn)
        >>> params = {"denoiser": jnp.zeros(()), "schedule": pg.diffusion.vdm_schedule(num_hidden=2)}
        >>> grads = jax.jit(jax.grad(loss))(params, jax.random.key(0), jnp.ones((16, 2)))
        >>> sorted(grads["schedule"]) == sorted(params["schedule"])
        True
    """
    num_steps = _check_num_steps(num_steps, "vdm_loss")
    if schedule_training not in SCHEDULE_TRAININGS:
        raise SettingError(f"vdm_loss: unknown schedule_training {schedule_training!r}; "
                           f"choose one of {SCHEDULE_TRAININGS}")

    def loss(params, key, batch):
        denoiser, schedule = _check_params(params, "vdm_loss")
        x = _data_batch(batch, "vdm_loss")
        k_t, k_eps = jax.random.split(key)
        size = x.shape[0]
        u = jnp.mod(jax.random.uniform(k_t, (), x.dtype) + jnp.arange(size, dtype=x.dtype) / size, 1.0)
        eps = jax.random.normal(k_eps, x.shape, x.dtype)
        if schedule_training == "elbo":
            prior, recon = _endpoint_terms(schedule, x)
            diffusion = _diffusion_term(eps_fn, denoiser, schedule, x, u, eps, num_steps, "vdm_loss")
            return jnp.mean(prior + recon + diffusion)
        stop = jax.lax.stop_gradient
        ends_only = {k: stop(v) if k in _INTERIOR_KEYS else v for k, v in schedule.items()}
        interior_only = {k: v if k in _INTERIOR_KEYS else stop(v) for k, v in schedule.items()}
        prior, recon = _endpoint_terms(ends_only, x)
        diffusion = _diffusion_term(eps_fn, denoiser, ends_only, x, u, eps, num_steps, "vdm_loss")
        # Same numbers, gradient to the interior only: d E[L^2] = d Var[L] when E[L] does not move.
        square = jnp.mean(_diffusion_term(eps_fn, jax.tree.map(stop, denoiser), interior_only, x, u, eps,
                                          num_steps, "vdm_loss") ** 2)
        return jnp.mean(prior + recon + diffusion) + square - stop(square)

    return loss


class VDMBound(NamedTuple):
    """Per-example ELBO estimate of a VDM and its terms (nats), each of shape ``(B,)``.

    Attributes:
      elbo: ``-(prior + reconstruction + diffusion)``, a lower bound on ``log p(x)`` (in expectation).
      stderr: Monte Carlo standard error of ``elbo`` (NaN with a single sample).
      prior: ``KL(q(z_1 | x) || N(0, I))`` (exact).
      reconstruction: ``E[-log p(x | z_0)]`` (exact).
      diffusion: the Monte Carlo mean of the diffusion loss ``L_inf`` or ``L_T``.
    """

    elbo: jax.Array
    stderr: jax.Array
    prior: jax.Array
    reconstruction: jax.Array
    diffusion: jax.Array


def vdm_elbo(key: jax.Array, eps_fn: EpsFn, params: dict, x: jax.Array, num_samples: int = 1,
             num_steps: int | None = None, batch_size: int | None = None) -> VDMBound:
    """Per-example ELBO ``log p(x) >= -(L_prior + L_recon + L_diffusion)`` of a VDM, by Monte Carlo.

    Each example gets ``num_samples`` i.i.d. draws ``(t, eps)``. The draws depend on ``key``,
    ``num_samples`` and the shape and dtype of ``x`` only, so two calls with the same key share
    their noise (the variance reduction of :func:`diffusion_classify`).

    Args:
      key: PRNG key.
      eps_fn: ``eps_fn(denoiser_params, z, gamma)`` as in :func:`vdm_loss`.
      params: ``{"denoiser": ..., "schedule": vdm_schedule(...)}``.
      x: data ``(B, *event)``.
      num_samples: draws per example.
      num_steps: ``None`` (continuous time) or ``T`` (discrete time).
      batch_size: draws evaluated together (``jax.lax.map``); ``None`` evaluates all at once.

    Returns:
      :class:`VDMBound` with fields of shape ``(B,)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> exact = lambda p, z, g: jnp.sqrt(jax.nn.sigmoid(g))[:, None] * z  # E[eps | z] for N(0, 1) data
        >>> params = {"denoiser": None, "schedule": pg.diffusion.vdm_schedule()}
        >>> bound = jax.jit(lambda key, x: pg.diffusion.vdm_elbo(key, exact, params, x, num_samples=20000))
        >>> b = bound(jax.random.key(0), jnp.zeros((1, 1)))
        >>> log_p = -0.5 * jnp.log(2 * jnp.pi)  # the bound is tight up to Monte Carlo error
        >>> bool(jnp.abs(b.elbo[0] - log_p) < 4 * b.stderr[0])
        True
    """
    num_samples = static_int(num_samples, "num_samples", "vdm_elbo")
    num_steps = _check_num_steps(num_steps, "vdm_elbo")
    if batch_size is not None:
        batch_size = static_int(batch_size, "batch_size", "vdm_elbo")
    denoiser, schedule = _check_params(params, "vdm_elbo")
    x = _data_batch(x, "vdm_elbo")

    def draw(k):
        k_t, k_eps = jax.random.split(k)
        u = jax.random.uniform(k_t, x.shape[:1], x.dtype)
        eps = jax.random.normal(k_eps, x.shape, x.dtype)
        return _diffusion_term(eps_fn, denoiser, schedule, x, u, eps, num_steps, "vdm_elbo")

    keys = particle_keys(key, num_samples)
    draws = jax.vmap(draw)(keys) if batch_size is None else jax.lax.map(draw, keys, batch_size=batch_size)
    prior, recon = _endpoint_terms(schedule, x)
    diffusion = jnp.mean(draws, axis=0)
    stderr = (jnp.std(draws, axis=0, ddof=1) / math.sqrt(num_samples) if num_samples > 1
              else jnp.full(x.shape[:1], jnp.nan, x.dtype))
    return VDMBound(-(prior + recon + diffusion), stderr, prior, recon, diffusion)

"""Score-matching losses, each a pure ``loss(params, key, batch) -> scalar``.

The loss takes the parameters first, like every trainable objective in probgen: pass it to
``pg.fit(loss, params, optimizer, key, data=x)``, ``pg.sweep``, ``jax.grad`` or optax as it
is (``batch`` is the data minibatch, shape ``(B, *event)``). The network is any
``model_fn(params, x_t, t)`` (``x_t`` of shape ``(B, *event)``, ``t`` of shape ``(B,)``): a
plain function of a parameter pytree, or a flax nnx module split into ``graphdef, state``
and called as ``nnx.merge(graphdef, state)(x_t, t)``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.errors import SettingError
from probgen.core.numerics import as_float
from probgen.diffusion.sde import SDE, _bcast

PARAMETERIZATIONS = ("eps", "x0", "v", "score")
WEIGHTINGS = ("default", "likelihood")


def _sum_event(v: jax.Array) -> jax.Array:
    return jnp.sum(v.reshape(v.shape[0], -1), axis=-1)


def _data_batch(batch, where: str) -> jax.Array:
    """The data minibatch as a floating array of shape ``(B, *event_shape)`` (integers become floats)."""
    batch = as_float(batch)
    if batch.ndim < 2:
        raise SettingError(f"{where}: batch must have shape (B, *event_shape), got {batch.shape}")
    return batch


def model_to_score(sde: SDE, output: jax.Array, x: jax.Array, t, parameterization: str) -> jax.Array:
    """Convert a network output in ``parameterization`` to a score estimate at ``(x, t)``.

    With ``x = alpha x0 + sigma eps``: ``score = -eps / sigma = (alpha x0 - x) / sigma^2``, and
    ``v = alpha eps - sigma x0`` (Salimans & Ho 2022) gives
    ``eps = (sigma x + alpha v) / (alpha^2 + sigma^2)``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> sde = pg.diffusion.vp()
        >>> s = pg.diffusion.model_to_score(sde, jnp.zeros((1, 2)), jnp.ones((1, 2)), 0.5, "x0")
        >>> bool(jnp.all(s < 0))
        True
    """
    if parameterization not in PARAMETERIZATIONS:
        raise SettingError(f"model_to_score: unknown parameterization {parameterization!r}; "
                           f"choose one of {PARAMETERIZATIONS}")
    a, sigma = _bcast(sde.alpha(t), x), _bcast(sde.sigma(t), x)
    if parameterization == "score":
        return output
    if parameterization == "eps":
        return -output / sigma
    if parameterization == "x0":
        return (a * output - x) / sigma**2
    eps = (sigma * x + a * output) / (a**2 + sigma**2)
    return -eps / sigma


def score_from_model(sde: SDE, model_fn: Callable, params, parameterization: str = "eps"):
    """A sampler-ready ``score_fn(x, t)`` from a trained ``model_fn(params, x, t_vector)``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> sde = pg.diffusion.vp()
        >>> score = pg.diffusion.score_from_model(sde, lambda p, x, t: p * x, 0.0, "eps")
        >>> score(jnp.ones((3, 2)), 0.5).shape
        (3, 2)
    """
    if parameterization not in PARAMETERIZATIONS:
        raise SettingError(f"score_from_model: unknown parameterization {parameterization!r}; "
                           f"choose one of {PARAMETERIZATIONS}")

    def score_fn(x, t):
        t_vec = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        return model_to_score(sde, model_fn(params, x, t_vec), x, t_vec, parameterization)

    return score_fn


def denoising_score_matching(sde: SDE, model_fn: Callable, parameterization: str = "eps",
                             weighting: str = "default", t_min: float = 1e-3) -> Callable:
    """Denoising score matching (Vincent 2011; Song et al. 2021) as ``loss(params, key, batch)``.

    ``t ~ U(t_min, t_max)``, ``x_t = alpha(t) x0 + sigma(t) eps``. With ``weighting="default"``
    each parameterization regresses its own target: ``||eps_hat - eps||^2``,
    ``||x0_hat - x0||^2``, ``||v_hat - v||^2`` or ``sigma^2 ||s_hat + eps/sigma||^2``. With
    ``weighting="likelihood"`` the output is turned into a score and weighted by ``g(t)^2``,
    which bounds the negative log-likelihood (Song, Durkan, Murray & Ermon 2021).

    Args:
      sde: the forward :class:`SDE`.
      model_fn: ``model_fn(params, x_t, t) -> array like x_t`` with ``t`` of shape ``(B,)``.
      parameterization: ``"eps"``, ``"x0"``, ``"v"`` or ``"score"``.
      weighting: ``"default"`` or ``"likelihood"``.
      t_min: smallest training time.

    Returns:
      ``loss(params, key, batch) -> scalar`` (mean over the batch, summed over event dims),
      ready for ``pg.fit(loss, params, optimizer, key, data=x)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> loss = pg.diffusion.denoising_score_matching(pg.diffusion.vp(), lambda p, x, t: p * x)
        >>> jax.grad(loss)(0.5, jax.random.key(0), jnp.ones((8, 2))).shape
        ()
    """
    if parameterization not in PARAMETERIZATIONS:
        raise SettingError(f"denoising_score_matching: unknown parameterization {parameterization!r}; "
                         f"choose one of {PARAMETERIZATIONS}")
    if weighting not in WEIGHTINGS:
        raise SettingError(f"denoising_score_matching: unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")
    if not 0.0 < t_min < sde.t_max:
        raise SettingError(f"denoising_score_matching: t_min must lie in (0, {sde.t_max}), got {t_min!r}")

    def loss(params, key, batch):
        batch = _data_batch(batch, "denoising_score_matching")
        k_t, k_eps = jax.random.split(key)
        t = jax.random.uniform(k_t, batch.shape[:1], batch.dtype, minval=t_min, maxval=sde.t_max)
        eps = jax.random.normal(k_eps, batch.shape, batch.dtype)
        a, sigma = _bcast(sde.alpha(t), batch), _bcast(sde.sigma(t), batch)
        x_t = a * batch + sigma * eps
        out = model_fn(params, x_t, t)
        if out.shape != batch.shape:
            raise SettingError(
                f"denoising_score_matching: model_fn returned shape {out.shape}, expected {batch.shape}"
            )
        if weighting == "likelihood":
            score = model_to_score(sde, out, x_t, t, parameterization)
            per = sde.g2(t) * _sum_event((score + eps / sigma) ** 2)
        elif parameterization == "eps":
            per = _sum_event((out - eps) ** 2)
        elif parameterization == "x0":
            per = _sum_event((out - batch) ** 2)
        elif parameterization == "v":
            per = _sum_event((out - (a * eps - sigma * batch)) ** 2)
        else:
            per = _sum_event((sigma * out + eps) ** 2)
        return jnp.mean(per)

    return loss


def sliced_score_matching(model_fn: Callable, num_projections: int = 1, variance_reduced: bool = True,
                          projection: str = "rademacher") -> Callable:
    """Sliced score matching (Song, Garg, Shi & Ermon 2019) as ``loss(params, key, batch)``.

    Estimates ``E[ v^T (d s / dx) v + (1/2) ||s||^2 ]`` (``variance_reduced=True``, SSM-VR) or
    ``E[ v^T (d s / dx) v + (1/2) (v^T s)^2 ]``, which equals the Fisher divergence
    ``(1/2) E||s - grad log p||^2`` up to a constant, without the data score.

    Args:
      model_fn: ``model_fn(params, x) -> score`` batched over the leading axis (rows independent).
      num_projections: random projections ``v`` per data point.
      variance_reduced: use the analytic ``||s||^2`` term.
      projection: ``"rademacher"`` or ``"gaussian"``.

    Returns:
      ``loss(params, key, batch) -> scalar``, ready for ``pg.fit(loss, params, optimizer, key, data=x)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> loss = pg.diffusion.sliced_score_matching(lambda p, x: -p * x)
        >>> round(float(loss(1.0, jax.random.key(0), jnp.zeros((4, 3)))), 3)
        -3.0
    """
    if projection not in ("rademacher", "gaussian"):
        raise SettingError(f"sliced_score_matching: projection must be 'rademacher' or 'gaussian', got {projection!r}")
    num_projections = static_int(num_projections, "num_projections", "sliced_score_matching")

    def loss(params, key, batch):
        batch = _data_batch(batch, "sliced_score_matching")
        shape = (num_projections,) + batch.shape
        if projection == "rademacher":
            v = jax.random.rademacher(key, shape, batch.dtype)
        else:
            v = jax.random.normal(key, shape, batch.dtype)
        fn = lambda x: model_fn(params, x)  # noqa: E731

        def one(vi):
            s, jv = jax.jvp(fn, (batch,), (vi,))
            trace_term = _sum_event(vi * jv)
            if variance_reduced:
                return trace_term + 0.5 * _sum_event(s**2)
            return trace_term + 0.5 * _sum_event(vi * s) ** 2

        return jnp.mean(jax.vmap(one)(v))

    return loss

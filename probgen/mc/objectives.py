"""SMC as a learning objective: the log of SMC's evidence estimate, a lower bound on ``log p(x)``.

``E[log Z_hat] <= log E[Z_hat] = log p(x)`` (Jensen), and the bound tightens as the particle
count grows. Its gradient trains model and proposal parameters together (FIVO: Maddison et
al. 2017; variational SMC: Naesseth et al. 2018; AESMC: Le et al. 2018). As in those papers,
no gradient flows through the resampling decisions and ancestor indices (the score-function
term of the discrete resampling draws is dropped: it has high variance); gradients do flow
through the weights, the reparameterized proposals and the resampled particles' values.

:func:`smc_objective` returns the loss in the direct form of every trainable objective in
probgen, ``loss(params, key, batch=None)``: ``pg.fit``, ``pg.sweep``, ``jax.grad`` and optax
take it as it is (``batch``, when given, is the observations of this step).
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from probgen.core.errors import SettingError
from probgen.mc.checks import check_num_particles
from probgen.mc.resampling import check_ess_threshold, check_scheme
from probgen.mc.smc import smc


def smc_objective(model_fn: Callable[[Any], tuple], observations=None, *, num_particles: int,
                  proposal_fn: Callable[[Any], tuple] | None = None, ess_threshold: float = 1.0,
                  scheme: str = "systematic") -> Callable[..., jax.Array]:
    """The FIVO / VSMC / AESMC loss ``-log Z_hat`` of a particle filter, as ``loss(params, key, batch=None)``.

    Args:
      model_fn: ``params -> (scan_model, init_carry, xs)``; build the ``pg.scan`` model
        (closing over ``params``) and its arguments.
      observations: ``ChoiceMap``/dict with a leading time axis, used when the loss is
        called without a batch (``None``: every call must give one).
      num_particles: a static positive int.
      proposal_fn: optional ``params -> (proposal_gf, proposal_args)``; the proposal is
        called as in :func:`pg.mc.particle_filter`. Default: bootstrap.
      ess_threshold: resampling threshold in ``(0, 1]`` (1.0: every step, as in FIVO).
      scheme: resampling scheme.

    Returns:
      ``loss(params, key, batch=None) -> -log Z_hat``, differentiable with ``jax.grad``
      (use the proposal sites' default reparameterized draws); ``batch``, when given, is
      the observations (leading time axis) in place of ``observations``, so
      ``pg.fit(loss, params, optimizer, key, data=observations)`` trains it as it is.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> def model_fn(params):
        ...     @pg.gen
        ...     def step(z, _):
        ...         z = pg.sample("z", pg.Normal(params["a"] * z, 1.0))
        ...         pg.sample("y", pg.Normal(z, 0.5))
        ...         return z, None
        ...     return pg.scan(step, length=5), 0.0, None
        >>> loss = pg.mc.smc_objective(model_fn, num_particles=16)
        >>> grads = jax.grad(loss)({"a": 0.5}, jax.random.key(0), {"y": jnp.zeros(5)})
        >>> grads["a"].shape
        ()
    """
    where = "smc_objective"
    num_particles = check_num_particles(num_particles, where)
    check_ess_threshold(ess_threshold, where)
    check_scheme(scheme, where)

    def loss(params, key, batch=None):
        observed = observations if batch is None else batch
        if observed is None:
            raise SettingError(
                f"{where}: no observations; give them to smc_objective(model_fn, observations, ...) "
                "or as the batch, loss(params, key, batch)"
            )
        model, init_carry, xs = model_fn(params)
        proposal, proposal_args = (None, ()) if proposal_fn is None else proposal_fn(params)
        result = smc(key, model, observed, init_carry, xs, num_particles=num_particles,
                     proposal=proposal, proposal_args=tuple(proposal_args),
                     ess_threshold=ess_threshold, scheme=scheme, keep="last")
        return -result.log_evidence

    return loss

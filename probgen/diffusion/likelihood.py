"""Log-likelihood through the probability-flow ODE (Song et al. 2021, Sec. 4.3; Chen et al. 2018).

Along the ODE ``dx/dt = v(x, t)``, ``d log p_t(x_t) / dt = -div v(x_t, t)``, so
``log p_{t_min}(x) = log p_prior(x_{t_max}) + int_{t_min}^{t_max} div v(x_t, t) dt``.
The integration is :func:`probgen.dynamics.cnf_integrator` on the particle batch; the
divergence is exact (``D`` batched Jacobian-vector products, low dimension) or Hutchinson's
unbiased estimate ``E[z^T (dv/dx) z]`` (high dimension), see :func:`probgen.dynamics.divergence`.
"""

from __future__ import annotations

import jax

from probgen.diffusion.samplers import _check_common
from probgen.diffusion.sde import SDE, ScoreFn, _as_field, checked_score
from probgen.dynamics import cnf_integrator
from probgen.kernels import Kernel, run


def likelihood_kernel(sde: SDE, score_fn: ScoreFn, num_steps: int, t_min: float = 1e-3,
                      divergence: str = "exact", num_probes: int = 1, probe: str = "rademacher",
                      method: str = "heun") -> Kernel:
    """A kernel integrating the probability-flow ODE forward in time with the log-density change.

    Args:
      sde, score_fn: the SDE and ``score_fn(x, t)`` (rows must not interact: the
        divergence is taken per particle through batched JVPs).
      num_steps: steps from ``t_min`` up to ``t_max``.
      t_min: the data time.
      divergence: ``"exact"`` or ``"hutchinson"``.
      num_probes: Hutchinson probes per step (fresh at each step, shared by its stages).
      probe: ``"rademacher"`` or ``"gaussian"`` Hutchinson probes.
      method: ``"euler"``, ``"heun"`` or ``"rk4"``.

    Returns:
      The :func:`probgen.dynamics.cnf_integrator` kernel from ``t_min`` to ``t_max`` on the
      batch: ``init(x) -> pg.dynamics.CNFState`` with ``delta_log_prob`` of shape
      ``(num_points,)``, ``horizon=num_steps``; times are computed from the step index in the
      dtype of ``x`` (the last step ends exactly at ``t_max``).

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> sde = pg.diffusion.vp()
        >>> k = pg.diffusion.likelihood_kernel(sde, lambda x, t: -x, 10)
        >>> s, _ = pg.run(k, jax.random.key(0), k.init(jnp.zeros((2, 1))), 10)
        >>> s.delta_log_prob.shape
        (2,)
    """
    num_steps = _check_common("likelihood", sde, num_steps, t_min)
    velocity = _as_field(sde.ode_drift, checked_score(score_fn, "likelihood"))
    return cnf_integrator(velocity, t_min, sde.t_max, num_steps, method, divergence, num_probes, probe,
                          batched=True, name="likelihood")


def log_likelihood(key: jax.Array, sde: SDE, score_fn: ScoreFn, x: jax.Array, num_steps: int = 200,
                   t_min: float = 1e-3, divergence: str = "exact", num_probes: int = 1,
                   probe: str = "rademacher", method: str = "heun") -> jax.Array:
    """Log density ``log p_{t_min}(x)`` of each point under the probability-flow ODE model.

    Args:
      key: PRNG key (used by Hutchinson probes).
      sde, score_fn: the model.
      x: points of shape ``(num_points, *event_shape)``.
      num_steps, t_min, divergence, num_probes, probe, method: see :func:`likelihood_kernel`.

    Returns:
      ``(num_points,)`` log densities (nats).

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> sde = pg.diffusion.vp()
        >>> gmm = pg.diffusion.gaussian_mixture([1.0], [[0.0]], 1.0)
        >>> lp = pg.diffusion.log_likelihood(jax.random.key(0), sde, pg.diffusion.gmm_score(gmm, sde), jnp.zeros((1, 1)))
        >>> abs(float(lp[0]) + 0.9189) < 1e-2
        True
    """
    kernel = likelihood_kernel(sde, score_fn, num_steps, t_min, divergence, num_probes, probe, method)
    final, _ = run(kernel, key, kernel.init(x), num_steps)
    return sde.prior_log_prob(final.x) + final.delta_log_prob

"""probgen.dynamics: the single home of numerical integration in probgen.

Vector fields take time first, ``f(t, x)``.

- :mod:`~probgen.dynamics.solvers`: one fixed ODE step (``ode_step``: Euler, Heun, RK4, on
  pytrees, keeping ``x``'s dtype) and one Euler–Maruyama step (``euler_maruyama_step``).
- :mod:`~probgen.dynamics.divergence`: ``divergence``, exact or Hutchinson, for one point or a
  batch of independent rows (one implementation).
- :mod:`~probgen.dynamics.integrators`: fixed-horizon :class:`probgen.Kernel` s on a uniform
  time grid (``grid_kernel``, ``ode_integrator``, ``sde_integrator``, ``cnf_integrator``) with
  the state ``IntegratorState(x, t, step)`` and one-shot drivers ``solve_ode`` and
  ``cnf_log_prob``.

The diffusion samplers (``pg.diffusion``) and the flow likelihoods and samplers are built on
these: they define vector fields and weights, never their own steppers.
"""

from probgen.dynamics.divergence import divergence
from probgen.dynamics.integrators import (
    CNFState,
    IntegratorInfo,
    IntegratorState,
    cnf_integrator,
    cnf_log_prob,
    grid_kernel,
    grid_times,
    ode_integrator,
    sde_integrator,
    solve_ode,
)
from probgen.dynamics.solvers import METHODS, euler_maruyama_step, ode_step

__all__ = [
    "METHODS", "ode_step", "euler_maruyama_step", "divergence",
    "IntegratorState", "IntegratorInfo", "CNFState", "grid_kernel", "grid_times", "ode_integrator", "sde_integrator",
    "cnf_integrator", "solve_ode", "cnf_log_prob",
]

"""probgen.flows: normalizing flows, interpolants / flow matching and optimal-transport couplings.

Flows are distributions usable at a sample site (``pg.sample("z", pg.flows.RealNVP(p))``).
A learned velocity ``v(t, x)`` is sampled and scored with :mod:`probgen.dynamics`
(``pg.dynamics.solve_ode`` / ``ode_integrator`` / ``sde_integrator``, and the
continuous-normalizing-flow likelihood ``pg.dynamics.cnf_log_prob`` / ``cnf_integrator``),
the single home of numerical integration. The path integral sampler, a learned sampler for
unnormalized densities, is ``pis_*`` (``pis_sampler`` the kernel, ``pis_sample`` its one-shot
driver, ``pis_reverse_kl`` / ``pis_log_variance`` its losses in the ``loss(params, key, batch)``
convention). The rational-quadratic spline of :func:`SplineFlow` is also usable bare,
elementwise: ``rq_spline_forward`` / ``rq_spline_inverse``.
"""

from probgen.flows import bijectors
from probgen.flows.distribution import (
    IAF,
    MAF,
    Affine,
    Flow,
    RealNVP,
    SplineFlow,
    init_affine,
    init_maf,
    init_realnvp,
    init_spline_flow,
)
from probgen.flows.nets import init_made, init_mlp, made, mlp
from probgen.flows.spline import rq_spline_forward, rq_spline_inverse
from probgen.flows.path_integral import (
    PISState,
    init_pis,
    pis_control,
    pis_log_normalizer,
    pis_log_variance,
    pis_reverse_kl,
    pis_sample,
    pis_sampler,
    pis_terminal_log_weight,
)
from probgen.flows.coupling import assignment, ot_coupling, reflow_pairs, sinkhorn_plan
from probgen.flows.interpolants import (
    Interpolant,
    interpolant_score_matching,
    interpolate,
    linear_interpolant,
    noisy_interpolant,
    score_loss,
    trig_interpolant,
    velocity_loss,
    velocity_matching,
)

__all__ = [
    "Affine",
    "Flow",
    "IAF",
    "Interpolant",
    "MAF",
    "PISState",
    "RealNVP",
    "SplineFlow",
    "assignment",
    "bijectors",
    "init_affine",
    "init_made",
    "init_maf",
    "init_mlp",
    "init_pis",
    "init_realnvp",
    "init_spline_flow",
    "interpolant_score_matching",
    "interpolate",
    "linear_interpolant",
    "made",
    "mlp",
    "noisy_interpolant",
    "ot_coupling",
    "pis_control",
    "pis_log_normalizer",
    "pis_log_variance",
    "pis_reverse_kl",
    "pis_sample",
    "pis_sampler",
    "pis_terminal_log_weight",
    "reflow_pairs",
    "rq_spline_forward",
    "rq_spline_inverse",
    "score_loss",
    "sinkhorn_plan",
    "trig_interpolant",
    "velocity_loss",
    "velocity_matching",
]

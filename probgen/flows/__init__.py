"""probgen.flows: normalizing flows, interpolants / flow matching, ODE and SDE samplers,
continuous-normalizing-flow likelihoods and learned samplers for unnormalized densities.

Flows are distributions usable at a sample site (``pg.sample("z", pg.flows.RealNVP(p))``);
samplers are :class:`pg.Kernel` s driven by :func:`pg.run`.
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
from probgen.flows.coupling import assignment, ot_coupling, reflow_pairs, sinkhorn_plan
from probgen.flows.interpolants import (
    Interpolant,
    interpolate,
    linear_interpolant,
    noisy_interpolant,
    score_loss,
    trig_interpolant,
    velocity_loss,
)
from probgen.flows.ode import (
    CNFState,
    ODEState,
    cnf_kernel,
    cnf_log_prob,
    ode_kernel,
    sde_kernel,
    solve_ode,
)
from probgen.flows.samplers import (
    SamplerState,
    control,
    diffusion_sampler_kernel,
    init_diffusion_sampler,
    log_normalizer,
    log_variance_loss,
    reverse_kl_loss,
    sample_paths,
    terminal_log_weight,
)

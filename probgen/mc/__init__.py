"""Monte Carlo: importance sampling, SMC, smoothing, resampling, tempering, MCMC and its diagnostics.

Every sampler is a :class:`pg.Kernel` (``init(position_or_particles)``, ``step``) with
NamedTuple states and infos, driven by :func:`pg.run`; particles carry a leading particle
axis. Infos name the same quantity the same way: ``acceptance_rate``, ``ess``,
``log_weights``. Gradient-based moves take a trace selection, a plain
``logdensity(position)`` function, or a model's :func:`posterior` (its continuous latents
in unconstrained coordinates); one-shot drivers (``smc``, ``tempered_smc``,
``importance_sampling``, ``run_mcmc``) compile themselves on the first call.
:func:`predictive` turns any of their posteriors (or a fitted guide) into posterior
predictive draws and pointwise log-likelihoods, exported for ``arviz.loo`` / ``waic``.
"""

from probgen.mc.diagnostics import MCMCSummary, bulk_ess, rank_normalized_rhat, summary, tail_ess
from probgen.mc.export import to_arviz
from probgen.mc.chains import CHAIN_METHODS, MCMCResult, run_mcmc
from probgen.mc.hamiltonian import (
    AdaptationInfo,
    HamiltonianInfo,
    HamiltonianState,
    WindowAdaptationState,
    adapted_parameters,
    nuts,
    window_adaptation,
)
from probgen.mc.importance import (
    ImportanceResult,
    importance_resampling,
    importance_sampling,
    importance_weight,
)
from probgen.mc.mcmc import MCMCInfo, hmc, hmc_proposal, mala, mala_proposal, mh, regenerate, rw_proposal
from probgen.mc.objectives import smc_objective
from probgen.mc.posterior import Posterior, posterior
from probgen.mc.predictive import PredictiveResult, predictive
from probgen.mc.replay import replay_generate
from probgen.mc.resampling import (
    SCHEMES,
    ess,
    log_mean_exp,
    maybe_resample,
    multinomial,
    normalize_weights,
    resample,
    residual,
    stratified,
    systematic,
)
from probgen.mc.smc import ParticleState, SMCInfo, SMCResult, particle_filter, smc
from probgen.mc.smoothing import SmoothedPaths, backward_simulation_smoother, genealogy_smoother
from probgen.mc.tempering import (
    TemperedInfo,
    TemperedResult,
    TemperedState,
    TemperingTarget,
    next_beta,
    tempered_smc,
    tempered_smc_kernel,
)

__all__ = [
    "AdaptationInfo", "CHAIN_METHODS", "HamiltonianInfo", "HamiltonianState", "MCMCResult", "Posterior",
    "PredictiveResult",
    "WindowAdaptationState", "adapted_parameters", "nuts", "posterior", "predictive", "run_mcmc", "window_adaptation",
    "MCMCSummary", "bulk_ess", "rank_normalized_rhat", "summary", "tail_ess", "to_arviz",
    "SmoothedPaths", "backward_simulation_smoother", "genealogy_smoother",
    "ImportanceResult", "MCMCInfo", "ParticleState", "SCHEMES", "SMCInfo", "SMCResult", "TemperedInfo",
    "TemperedResult", "TemperedState", "TemperingTarget", "ess", "hmc", "hmc_proposal", "importance_resampling",
    "importance_sampling", "importance_weight", "log_mean_exp", "mala", "mala_proposal", "maybe_resample",
    "mh", "multinomial", "next_beta", "normalize_weights", "particle_filter", "regenerate", "replay_generate",
    "resample", "residual", "rw_proposal", "smc", "smc_objective", "stratified", "systematic",
    "tempered_smc", "tempered_smc_kernel",
]

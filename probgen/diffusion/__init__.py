"""probgen.diffusion: SDEs, score-matching losses, diffusion samplers as kernels, the
probability-flow likelihood, guidance, Feynman–Kac correctors, noise search and the path
integral sampler for unnormalized densities.

Every sampler takes ``score_fn(x, t)`` with ``x`` the whole particle batch
``(num_particles, *event_shape)`` and scalar ``t``, and is a :class:`probgen.Kernel` run by
``pg.run``. The numerical integration (Euler–Maruyama, Runge–Kutta, divergences, the
sampler state ``IntegratorState(x, t, step)``) lives in :mod:`probgen.dynamics`; this package
defines the SDEs' vector fields and weights. ``reverse_sample`` is the one-shot driver of
the samplers, ``log_likelihood`` of the likelihood kernel, ``fkc_sample`` of the
Feynman–Kac corrector. The learned path integral sampler for unnormalized densities is
``pg.flows.pis_*``. :class:`GaussianMixture` gives exact noised scores and densities for testing.
``vdm_*``: variational diffusion models (learned log-SNR schedule, continuous/discrete ELBO);
``diffusion_classify``: zero-shot classification by class-conditional ELBOs; ``svdd`` and
``smc_guidance``: derivative-free reward guidance of any pretrained sampler kernel.

Discrete data (integer tokens ``(N, L)``, vocabulary ``K``, mask id ``K``; time ``t = 1`` noise
to ``t = 0`` data; a denoiser ``denoiser(x_t, t) -> logits (N, L, K)``): masked diffusion
(``mask_tokens``, ``masked_diffusion_loss``, ``masked_diffusion_elbo``, ``masked_elbo_integrand``,
the samplers ``masked_ancestral`` and ``masked_topk_unmasking``, ``masked_transition_log_prob``),
uniform-noise diffusion (``uniform_*``, ``randomize_tokens``), discrete flow matching (``discrete_flow_*``),
with the schedules ``linear_schedule``, ``cosine_schedule`` and ``polynomial_schedule`` (per token
class: learnable). Their samplers are kernels with state ``IntegratorState(x, t, step)``, ``x`` int.
"""

from probgen.diffusion.fkc import (
    FKCInfo,
    FKCState,
    anneal,
    feynman_kac,
    fkc_sample,
    fkc_guidance,
    product_of_experts,
)
from probgen.diffusion.classify import ClassifierScores, diffusion_classify
from probgen.diffusion.discrete import DiscreteSchedule, cosine_schedule, linear_schedule, polynomial_schedule
from probgen.diffusion.discrete_flow import discrete_flow_euler, discrete_flow_loss, discrete_flow_transition_log_prob
from probgen.diffusion.guidance import classifier_free_guidance, classifier_guidance
from probgen.diffusion.likelihood import likelihood_kernel, log_likelihood
from probgen.diffusion.masked import (
    all_masked,
    mask_tokens,
    masked_ancestral,
    masked_diffusion_elbo,
    masked_diffusion_loss,
    masked_elbo_integrand,
    masked_topk_unmasking,
    masked_transition_log_prob,
)
from probgen.diffusion.losses import (
    PARAMETERIZATIONS,
    denoising_score_matching,
    model_to_score,
    score_from_model,
    sliced_score_matching,
)
from probgen.diffusion.mixture import (
    GaussianMixture,
    gaussian_mixture,
    gmm_log_prob,
    gmm_score,
    mixture_product,
)
from probgen.diffusion.samplers import (
    SAMPLERS,
    ddim,
    ddpm,
    euler_maruyama,
    predictor_corrector,
    probability_flow,
    reverse_sample,
    time_grid,
)
from probgen.diffusion.sde import SDE, subvp, ve, vp, vp_cosine
from probgen.diffusion.search import SearchResult, SearchState, best_of_n, local_search, zero_order_search
from probgen.diffusion.smc_guidance import SMCGuidanceInfo, SMCGuidanceState, smc_guidance, smc_guidance_sample
from probgen.diffusion.svdd import SVDDInfo, svdd, svdd_sample
from probgen.diffusion.uniform_discrete import (
    randomize_tokens,
    uniform_ancestral,
    uniform_diffusion_elbo,
    uniform_diffusion_loss,
    uniform_elbo_integrand,
    uniform_transition_log_prob,
)
from probgen.diffusion.vdm import (
    VDMBound,
    vdm_elbo,
    vdm_gamma,
    vdm_loss,
    vdm_schedule,
    vdm_score,
    vdm_sde,
)

__all__ = [
    "SDE", "vp", "vp_cosine", "ve", "subvp",
    "GaussianMixture", "gaussian_mixture", "gmm_score", "gmm_log_prob", "mixture_product",
    "SAMPLERS", "time_grid", "euler_maruyama", "predictor_corrector", "ddpm", "ddim", "probability_flow",
    "reverse_sample",
    "likelihood_kernel", "log_likelihood",
    "PARAMETERIZATIONS", "denoising_score_matching", "sliced_score_matching", "model_to_score",
    "score_from_model",
    "classifier_guidance", "classifier_free_guidance",
    "FKCState", "FKCInfo", "feynman_kac", "fkc_sample", "anneal", "product_of_experts", "fkc_guidance",
    "SearchResult", "SearchState", "best_of_n", "zero_order_search", "local_search",
    "VDMBound", "vdm_schedule", "vdm_gamma", "vdm_sde", "vdm_score", "vdm_loss", "vdm_elbo",
    "ClassifierScores", "diffusion_classify",
    "SVDDInfo", "svdd", "svdd_sample", "SMCGuidanceState", "SMCGuidanceInfo", "smc_guidance", "smc_guidance_sample",
    "DiscreteSchedule", "linear_schedule", "cosine_schedule", "polynomial_schedule",
    "all_masked", "mask_tokens", "masked_diffusion_loss", "masked_diffusion_elbo", "masked_elbo_integrand",
    "masked_ancestral", "masked_topk_unmasking", "masked_transition_log_prob",
    "randomize_tokens", "uniform_diffusion_loss", "uniform_diffusion_elbo", "uniform_elbo_integrand",
    "uniform_ancestral", "uniform_transition_log_prob",
    "discrete_flow_loss", "discrete_flow_euler", "discrete_flow_transition_log_prob",
]

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
from probgen.diffusion.guidance import classifier_free_guidance, classifier_guidance
from probgen.diffusion.likelihood import likelihood_kernel, log_likelihood
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
]

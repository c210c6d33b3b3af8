"""Monte Carlo: importance sampling, SMC, resampling, tempering and MCMC moves."""

from probgen.mc.resampling import (
    SCHEMES,
    ess,
    log_mean_exp,
    multinomial,
    normalize,
    resample,
    residual,
    stratified,
    systematic,
)

"""probgen: programmable probabilistic inference in JAX.

``import probgen as pg``. Models and variational families are ``@pg.gen`` functions;
``pg.vi`` turns programs over them into gradient estimators; ``pg.mc`` holds importance
sampling, SMC and MCMC; ``pg.diffusion`` and ``pg.flows`` hold score-based and flow
samplers, all speaking the one kernel protocol (``pg.Kernel``, ``pg.run``); ``pg.gfn``
holds GFlowNets (environments in pure JAX, policies as generative functions); ``pg.train``
fits, sweeps and checkpoints.
"""

from probgen.core import (
    ALL,
    AddressError,
    ArgumentError,
    ChoiceMap,
    ConstraintError,
    GenerativeFunction,
    GenFn,
    MissingChoiceError,
    ProbgenError,
    Selection,
    StrategyError,
    SettingError,
    Trace,
    ValidationError,
    gen,
    mix,
    particle_keys,
    repeat,
    sample,
    scan,
    select,
    switch,
    validate,
    vmap,
)
from probgen.distributions import *  # noqa: F401,F403  (Normal, Bernoulli, ..., strategies)
from probgen.distributions import dist
from probgen.kernels import Kernel, run

__version__ = "0.1.0"

from probgen import diffusion, dynamics, flows, gfn, mc, train, vi  # noqa: E402,F401
from probgen.train import fit, resume, sweep  # noqa: E402
from probgen.mc import predictive  # noqa: E402

from probgen.distributions import __all__ as _distribution_names  # noqa: E402

__all__ = sorted(
    [
        "ALL", "AddressError", "ArgumentError", "ChoiceMap", "ConstraintError", "GenFn", "GenerativeFunction",
        "Kernel", "MissingChoiceError", "ProbgenError", "Selection", "SettingError", "StrategyError", "Trace",
        "ValidationError", "diffusion", "dynamics", "fit", "flows", "gen", "gfn", "mc", "mix", "particle_keys", "predictive", "repeat",
        "resume", "run", "sample", "scan", "select", "sweep", "switch", "train", "validate", "vi", "vmap",
    ]
    + list(_distribution_names)
)


def __dir__() -> list[str]:
    """``dir(pg)`` shows the API, not the modules it is built from."""
    return list(__all__)

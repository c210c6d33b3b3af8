"""Export MCMC draws to ArviZ, for its plots and its diagnostics.

ArviZ is an optional dependency (``pip install "probgen[arviz]"``), imported only when
:func:`to_arviz` runs. ArviZ 1.x's ``from_dict`` returns an ``xarray.DataTree``; ArviZ 0.x
(the newest release for Python 3.11) returns an ``InferenceData``. Both have the groups
``posterior``, ``sample_stats`` and ``observed_data``, read the same way:
``data["posterior"]["mu"]``.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np

from probgen.core.errors import SettingError
from probgen.mc.diagnostics import _named_draws, _unpack_result

__all__ = ["to_arviz"]

# Our info names -> ArviZ's sample_stats conventions (names not listed are kept as they are).
_ARVIZ_STAT_NAMES = {
    "is_divergent": "diverging",
    "num_integration_steps": "n_steps",
    "num_trajectory_expansions": "tree_depth",
    "logdensity": "lp",
    "acceptance_rate": "acceptance_rate",
    "energy": "energy",
    "step_size": "step_size",
}


def _import_arviz(where: str):
    try:
        with warnings.catch_warnings():
            # ArviZ 0.x announces its 1.0 migration on import; not the caller's concern here.
            warnings.simplefilter("ignore", FutureWarning)
            import arviz
    except ImportError as error:
        raise ImportError(f"{where} needs ArviZ, an optional dependency: pip install \"probgen[arviz]\"") from error
    return arviz


def _group(values: Mapping[str, Any], chains_draws: tuple[int, int] | None, group: str, where: str) -> dict:
    """Host NumPy arrays (dtypes kept), each checked for the leading ``(num_chains, num_draws)``."""
    out = {}
    for name, value in values.items():
        array = np.asarray(value)
        if array.dtype == object:
            raise SettingError(f"{where}: {group} entry {name!r} must be an array, got {type(value).__name__}")
        if chains_draws is not None:
            if group == "sample_stats" and array.shape == chains_draws[:1]:
                array = np.broadcast_to(array[:, None], chains_draws)  # a per-chain value (a step size)
            if array.shape[:2] != chains_draws:
                raise SettingError(f"{where}: {group} entry {name!r} must have leading shape (num_chains, "
                                   f"num_draws) = {chains_draws}, got {array.shape}")
        out[name] = array
    return out


def _stats_dict(sample_stats: Any, where: str) -> dict[str, Any]:
    if hasattr(sample_stats, "_asdict"):  # an Info NamedTuple
        sample_stats = sample_stats._asdict()
    if not isinstance(sample_stats, Mapping):
        raise SettingError(f"{where}: sample_stats must be a mapping or an Info NamedTuple, "
                           f"got {type(sample_stats).__name__}")
    renamed: dict[str, Any] = {}
    for name, value in sample_stats.items():
        arviz_name = _ARVIZ_STAT_NAMES.get(name, name)
        if arviz_name in renamed:
            raise SettingError(f"{where}: sample_stats has both {name!r} and another entry named "
                               f"{arviz_name!r} in ArviZ")
        renamed[arviz_name] = value
    return renamed


def to_arviz(samples: Mapping[str, Any] | Any, sample_stats: Any = None, observed_data: Mapping[str, Any] | None = None,
             *, posterior_predictive: Mapping[str, Any] | None = None,
             log_likelihood: Mapping[str, Any] | None = None,
             coords: Mapping[str, Any] | None = None, dims: Mapping[str, list[str]] | None = None):
    """MCMC draws (and their sampler statistics, the observed data, posterior predictive
    draws and pointwise log-likelihoods) as an ArviZ data tree.

    Args:
      samples: draws ``(num_chains, num_draws, *shape)``: one array (named ``"x"``), a
        mapping of name (or address) -> arrays (nested addresses are named ``"outer.inner"``,
        since ArviZ names may not hold ``/``), or a :func:`pg.mc.run_mcmc` result (its
        ``samples``, its ``infos`` and its per-chain ``step_size`` as the sample stats).
      sample_stats: per-draw sampler statistics, ``(num_chains, num_draws)`` each (a
        per-chain ``(num_chains,)`` value is repeated over draws): a mapping or an Info
        NamedTuple such as ``HamiltonianInfo``. Names follow ArviZ: ``is_divergent`` ->
        ``diverging``, ``num_integration_steps`` -> ``n_steps``, ``num_trajectory_expansions``
        -> ``tree_depth``, ``logdensity`` -> ``lp``; ``acceptance_rate``, ``energy``,
        ``step_size`` and unknown names are kept.
      observed_data: a mapping of name -> observed array (no chain or draw axis).
      posterior_predictive: a mapping of name -> predictive draws ``(num_chains, num_draws,
        *shape)`` (:func:`pg.mc.predictive`; ``PredictiveResult.to_arviz`` fills it).
      log_likelihood: a mapping of observed name -> pointwise log-likelihood
        ``(num_chains, num_draws, *observation_shape)``, what ``arviz.loo`` and
        ``arviz.waic`` read.
      coords, dims: ArviZ's coordinate values and per-variable dimension names.

    Returns:
      What ``arviz.from_dict`` returns: an ``xarray.DataTree`` (ArviZ 1.x) or an
      ``InferenceData`` (ArviZ 0.x), with groups ``posterior``, ``sample_stats``,
      ``observed_data``, ``posterior_predictive`` and ``log_likelihood`` as given. Arrays
      keep their dtypes.

    Raises:
      ImportError: when ArviZ is not installed (``pip install "probgen[arviz]"``).

    Example:
        >>> import numpy as np, probgen as pg
        >>> rng = np.random.default_rng(0)
        >>> data = pg.mc.to_arviz({"mu": rng.normal(size=(2, 100))},
        ...                       sample_stats={"is_divergent": np.zeros((2, 100), bool)},
        ...                       observed_data={"y": np.array([0.3, -0.2])})
        >>> data["posterior"]["mu"].dims, data["sample_stats"]["diverging"].shape
        (('chain', 'draw'), (2, 100))
    """
    where = "to_arviz"
    arviz = _import_arviz(where)
    result = samples
    samples, infos = _unpack_result(samples)
    if sample_stats is None and infos is not None:
        sample_stats = dict(infos._asdict()) if hasattr(infos, "_asdict") else dict(infos)
        if getattr(result, "step_size", None) is not None:
            sample_stats.setdefault("step_size", result.step_size)
    posterior = _group(_named_draws(samples, where, separator="."), None, "posterior", where)
    shapes = {name: value.shape[:2] for name, value in posterior.items()}
    if any(value.ndim < 2 for value in posterior.values()) or len(set(shapes.values())) != 1:
        raise SettingError(f"{where}: every posterior array needs the same leading (num_chains, num_draws), got "
                           + ", ".join(f"{name!r}: {np.shape(value)}" for name, value in posterior.items()))
    chains_draws = next(iter(shapes.values()))
    groups = {"posterior": posterior}
    if sample_stats is not None:
        groups["sample_stats"] = _group(_stats_dict(sample_stats, where), chains_draws, "sample_stats", where)
    if observed_data is not None:
        if not isinstance(observed_data, Mapping):
            raise SettingError(f"{where}: observed_data must be a mapping of name -> array, "
                               f"got {type(observed_data).__name__}")
        groups["observed_data"] = _group(_named_draws(observed_data, where, separator="."), None,
                                         "observed_data", where)
    for group, values in (("posterior_predictive", posterior_predictive), ("log_likelihood", log_likelihood)):
        if values is not None:
            if not isinstance(values, Mapping):
                raise SettingError(f"{where}: {group} must be a mapping of name -> array, got {type(values).__name__}")
            groups[group] = _group(_named_draws(values, where, separator="."), chains_draws, group, where)
    if int(arviz.__version__.split(".")[0]) >= 1:
        return arviz.from_dict(groups, coords=coords, dims=dims)
    return arviz.from_dict(**groups, coords=coords, dims=dims)

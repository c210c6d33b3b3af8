"""MCMC convergence diagnostics: rank-normalized split R-hat, bulk and tail ESS, a summary table.

The estimators of Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), "Rank-normalization,
folding, and localization: an improved R-hat for assessing convergence of MCMC", as Stan,
the ``posterior`` R package and ArviZ compute them (the numbers agree with ``arviz.ess`` /
``arviz.rhat`` to rounding):

- chains are **split** in halves (the middle draw of an odd-length chain dropped, as in
  NumPyro and ArviZ);
- **ESS** of a split sample: Geyer's initial monotone sequence of autocorrelations with the
  paper's refinement for antithetic chains (the even term of the truncating pair, and the
  cap ``ESS <= N log10 N``). NumPyro's ``effective_sample_size`` follows the older Stan 2.18
  estimator without that refinement and can read a few percent lower;
- **bulk ESS**: the ESS of the rank-normalized draws (pooled ranks mapped through the
  normal quantile function), robust to heavy tails;
- **tail ESS**: the smaller ESS of the indicators ``x <= q_0.05`` and ``x <= q_0.95``;
- **R-hat**: the larger split R-hat (NumPyro's ``gelman_rubin`` on the split chains) of the
  rank-normalized draws and of the rank-normalized folded draws ``|x - median|`` (which
  catches chains that differ in scale only).

Draws have shape ``(num_chains, num_draws, *param_shape)``: the diagnostics run on the host
(NumPy), after sampling, not inside ``jit``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import scipy.stats
from numpyro import diagnostics as _numpyro

from probgen.core.errors import SettingError

__all__ = ["MCMCSummary", "bulk_ess", "rank_normalized_rhat", "summary", "tail_ess"]


def _chains(samples: Any, where: str) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] < 1 or x.shape[1] < 4:
        raise SettingError(
            f"{where}: samples must have shape (num_chains, num_draws, *param_shape) with at least "
            f"4 draws per chain, got {x.shape}")
    return x


def _split(x: np.ndarray) -> np.ndarray:
    """Each chain cut in two halves (the middle draw of an odd chain dropped): ``(2 * chains, draws // 2, ...)``."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)


def _rank_normalize(x: np.ndarray) -> np.ndarray:
    """Pooled fractional ranks through the normal quantile function (Blom offsets), per parameter."""
    flat = x.reshape(-1, *x.shape[2:])
    ranks = scipy.stats.rankdata(flat, axis=0)
    z = scipy.stats.norm.ppf((ranks - 0.375) / (flat.shape[0] + 0.25))
    return z.reshape(x.shape)


def _ess(x: np.ndarray) -> np.ndarray:
    """ESS of ``(chains, draws, *shape)`` (already split) draws, per parameter.

    Vehtari et al. (2021), eqs. (10)-(11): autocorrelations from the biased FFT
    autocovariance and the between-chain variance; Geyer's initial positive sequence of
    pair sums ``rho[2k] + rho[2k + 1]`` is truncated at the first non-positive pair (or at
    the chain's end), made monotone, and the truncating pair's even term is added when
    positive (the antithetic-chain refinement); ``tau >= 1 / log10(N)`` caps the ESS.
    """
    num_chains, num_draws = x.shape[:2]
    size = num_chains * num_draws
    acov = _numpyro.autocovariance(x, axis=1)
    within = acov[:, 0].mean(axis=0) * num_draws / (num_draws - 1)
    var_plus = within * (num_draws - 1) / num_draws
    if num_chains > 1:
        var_plus = var_plus + x.mean(axis=1).var(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = 1.0 - (within - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0
    num_pairs = max((num_draws - 1) // 2, 1)
    even = rho[0:2 * num_pairs:2]
    pairs = even + rho[1:2 * num_pairs:2]
    positive = pairs > 0
    reached_end = positive.all(axis=0)
    stop = np.where(reached_end, num_pairs - 1, positive.argmin(axis=0))
    lags = np.arange(num_pairs).reshape((-1,) + (1,) * stop.ndim)
    monotone = np.where(lags < stop, np.minimum.accumulate(pairs, axis=0), 0.0)
    stop_even = np.take_along_axis(even, stop[None], axis=0)[0]
    stop_pair = np.take_along_axis(pairs, stop[None], axis=0)[0]
    # The truncating pair is kept when its sum is exactly 0 or when the chain ran out.
    refinement = np.where(reached_end | (stop_pair == 0), stop_even, np.maximum(stop_even, 0.0))
    tau = np.maximum(-1.0 + 2.0 * monotone.sum(axis=0) + refinement, 1.0 / np.log10(size))
    ess = size / tau
    ess = np.where(np.isnan(rho).any(axis=0), np.nan, ess)
    constant = np.ptp(x, axis=(0, 1)) < np.finfo(np.float64).resolution
    return np.where(constant, float(size), ess)


def _interval_probs(prob: float, where: str) -> tuple[float, float]:
    """The end quantiles ``((1 - prob) / 2, (1 + prob) / 2)`` of a central interval, as decimals.

    ``(1 - 0.9) / 2`` is ``0.04999999999999999`` in floating point; its quantile can fall one
    draw off ArviZ's ``0.05``, so the probabilities are rounded to 12 digits.
    """
    if not 0.0 < prob < 1.0:
        raise SettingError(f"{where}: prob must lie in (0, 1), got {prob!r}")
    return round((1 - prob) / 2, 12), round((1 + prob) / 2, 12)


def bulk_ess(samples: Any) -> np.ndarray:
    """Bulk effective sample size: the ESS of the rank-normalized split chains.

    Args:
      samples: draws ``(num_chains, num_draws, *param_shape)``, at least 4 draws per chain.

    Returns:
      The ESS of each scalar parameter, shape ``param_shape``.

    Example:
        >>> import numpy as np, probgen as pg
        >>> draws = np.random.default_rng(0).normal(size=(4, 1000))
        >>> 3000 < float(pg.mc.bulk_ess(draws)) < 5000  # independent draws: about 4000
        True
    """
    x = _chains(samples, "bulk_ess")
    return _ess(_rank_normalize(_split(x)))


def tail_ess(samples: Any, prob: float = 0.9) -> np.ndarray:
    """Tail effective sample size: the smaller ESS of ``1[x <= q_a]`` and ``1[x <= q_{1-a}]``, ``a = (1 - prob) / 2``.

    Args:
      samples: draws ``(num_chains, num_draws, *param_shape)``, at least 4 draws per chain.
      prob: the central interval whose end quantiles are checked (0.9: ``q_0.05``, ``q_0.95``).

    Returns:
      The tail ESS of each scalar parameter, shape ``param_shape``.

    Example:
        >>> import numpy as np, probgen as pg
        >>> draws = np.random.default_rng(0).normal(size=(4, 1000))
        >>> 2500 < float(pg.mc.tail_ess(draws)) < 5500
        True
    """
    low_prob, high_prob = _interval_probs(prob, "tail_ess")
    x = _chains(samples, "tail_ess")
    low, high = np.quantile(x.reshape(-1, *x.shape[2:]), [low_prob, high_prob], axis=0)
    split = _split(x)
    return np.minimum(_ess((split <= low).astype(np.float64)), _ess((split <= high).astype(np.float64)))


def rank_normalized_rhat(samples: Any) -> np.ndarray:
    """Rank-normalized split R-hat: the larger of the bulk and the folded (scale) statistics.

    Args:
      samples: draws ``(num_chains, num_draws, *param_shape)``, at least 4 draws per chain.

    Returns:
      R-hat of each scalar parameter, shape ``param_shape`` (below 1.01 for converged chains).

    Example:
        >>> import numpy as np, probgen as pg
        >>> draws = np.random.default_rng(0).normal(size=(4, 1000))
        >>> float(pg.mc.rank_normalized_rhat(draws)) < 1.01
        True
    """
    split = _split(_chains(samples, "rank_normalized_rhat"))
    folded = np.abs(split - np.median(split.reshape(-1, *split.shape[2:]), axis=0))
    bulk = _numpyro.gelman_rubin(_rank_normalize(split))
    scale = _numpyro.gelman_rubin(_rank_normalize(folded))
    return np.maximum(bulk, scale)


def _unpack_result(samples: Any) -> tuple[Any, Any]:
    """``(draws, infos)`` of a run result with ``.samples`` and ``.infos`` (``pg.mc.run_mcmc``), else ``(samples, None)``."""
    if hasattr(samples, "samples") and hasattr(samples, "infos"):
        return samples.samples, samples.infos
    return samples, None


def _named_draws(samples: Any, where: str, separator: str = "/") -> dict[str, Any]:
    """``name -> array`` from one array (named ``"x"``) or a (nested) mapping by name or address.

    A nested or tuple address ``("layer", "w")`` is named ``"layer/w"`` (``separator``).
    """
    if not isinstance(samples, Mapping):
        return {"x": samples}
    named: dict[str, Any] = {}

    def visit(prefix: tuple, mapping: Mapping) -> None:
        for key, value in mapping.items():
            address = prefix + (key if isinstance(key, tuple) else (key,))
            if isinstance(value, Mapping):
                visit(address, value)
            else:
                named[separator.join(map(str, address))] = value

    visit((), samples)
    if not named:
        raise SettingError(f"{where}: samples holds no arrays")
    return named


def _divergences(divergences: Any, chains_draws: tuple[int, int], where: str) -> np.ndarray:
    flags = np.asarray(divergences)
    if flags.shape != chains_draws or not (flags.dtype == bool or np.issubdtype(flags.dtype, np.integer)):
        raise SettingError(f"{where}: divergences must be a boolean array of shape (num_chains, num_draws) "
                           f"= {chains_draws}, got {flags.dtype} {flags.shape}")
    return flags.astype(bool)


class MCMCSummary(dict):
    """``name -> {statistic -> array}``, from :func:`summary`; ``str()`` / ``repr()`` of it is the table.

    Attributes:
      columns: the statistics, in table order.
      num_divergences: the number of divergent transitions (``None`` when not given).
      num_chains, num_draws: the sample's shape.
    """

    def __init__(self, columns: tuple[str, ...], num_chains: int, num_draws: int,
                 num_divergences: int | None = None):
        super().__init__()
        self.columns = columns
        self.num_chains = num_chains
        self.num_draws = num_draws
        self.num_divergences = num_divergences

    def _cell(self, column: str, value: float) -> str:
        if column.endswith("_ess"):
            return f"{value:.0f}"
        if column == "r_hat":
            return f"{value:.3f}"
        return f"{value:#.3g}"

    def __str__(self) -> str:
        rows = [("",) + self.columns]
        for name, stats in self.items():
            shape = np.shape(stats["mean"])
            for index in np.ndindex(*shape):
                label = name + (str(list(index)) if shape else "")
                rows.append((label,) + tuple(self._cell(c, float(np.asarray(stats[c])[index])) for c in self.columns))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
        if self.num_divergences is not None:
            lines.append(f"Number of divergences: {self.num_divergences} "
                         f"(of {self.num_chains} chains x {self.num_draws} draws)")
        return "\n".join(lines)

    __repr__ = __str__


def summary(samples: Mapping[str, Any] | Any, prob: float = 0.9, *, divergences: Any = None) -> MCMCSummary:
    """Posterior summary of MCMC draws: mean, sd, quantiles, bulk / tail ESS and R-hat, and divergences.

    Like NumPyro's ``print_summary`` and ArviZ's ``summary``: one row per scalar component of
    each parameter; the ESS and R-hat columns are :func:`bulk_ess`, :func:`tail_ess` and
    :func:`rank_normalized_rhat`. Host-side NumPy, after sampling.

    Args:
      samples: an array ``(num_chains, num_draws, *shape)`` (named ``"x"``), a mapping of
        name (or address) -> such arrays (nested mappings are named ``"outer/inner"``), or a
        :func:`pg.mc.run_mcmc` result (its ``samples``, and the divergences from its
        ``infos.is_divergent``).
      prob: the central interval reported by the quantile columns (default 0.9: ``q5``, ``q95``).
      divergences: optional boolean ``(num_chains, num_draws)`` flags, e.g. NUTS infos'
        ``is_divergent``; their count is printed under the table.

    Returns:
      An :class:`MCMCSummary` (a dict ``name -> {statistic -> array}`` with
      ``num_divergences``); print it for the table.

    Example:
        >>> import numpy as np, probgen as pg
        >>> rng = np.random.default_rng(0)
        >>> draws = {"mu": 1.0 + rng.normal(size=(4, 500)), "v": rng.normal(size=(4, 500, 2))}
        >>> table = pg.mc.summary(draws, divergences=np.zeros((4, 500), bool))
        >>> round(float(table["mu"]["mean"]), 1), float(table["mu"]["r_hat"]) < 1.01
        (1.0, True)
        >>> print(table)  # doctest: +ELLIPSIS
             mean     sd      q5  median    q95  bulk_ess  tail_ess  r_hat
          mu  ...
        v[0]  ...
        v[1]  ...
        Number of divergences: 0 (of 4 chains x 500 draws)
    """
    where = "summary"
    low_prob, high_prob = _interval_probs(prob, where)
    samples, infos = _unpack_result(samples)
    if divergences is None and infos is not None:
        divergences = getattr(infos, "is_divergent", None)
    named = {name: _chains(value, f"{where}: {name!r}") for name, value in _named_draws(samples, where).items()}
    shapes = {x.shape[:2] for x in named.values()}
    if len(shapes) > 1:
        raise SettingError(f"{where}: every parameter needs the same (num_chains, num_draws), got "
                           + ", ".join(f"{name!r}: {x.shape[:2]}" for name, x in named.items()))
    (num_chains, num_draws), = shapes
    num_divergences = None
    if divergences is not None:
        num_divergences = int(_divergences(divergences, (num_chains, num_draws), where).sum())
    low_name, high_name = (f"q{100 * q:g}" for q in (low_prob, high_prob))
    table = MCMCSummary(("mean", "sd", low_name, "median", high_name, "bulk_ess", "tail_ess", "r_hat"),
                        num_chains, num_draws, num_divergences)
    for name, x in named.items():
        pooled = x.reshape(-1, *x.shape[2:])
        low, median, high = np.quantile(pooled, [low_prob, 0.5, high_prob], axis=0)
        table[name] = {
            "mean": pooled.mean(axis=0), "sd": pooled.std(axis=0, ddof=1),
            low_name: low, "median": median, high_name: high,
            "bulk_ess": bulk_ess(x), "tail_ess": tail_ess(x, prob), "r_hat": rank_normalized_rhat(x),
        }
    return table

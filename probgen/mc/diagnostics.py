"""MCMC convergence diagnostics: rank-normalized split R-hat, bulk and tail ESS, a summary table.

Built on ``numpyro.diagnostics`` (its split Gelman–Rubin statistic and its FFT-based
effective sample size), applied to the transformed draws of Vehtari, Gelman, Simpson,
Carpenter & Bürkner (2021), "Rank-normalization, folding, and localization":

- **bulk ESS**: the ESS of the rank-normalized draws (pooled ranks mapped through the
  normal quantile function), robust to heavy tails;
- **tail ESS**: the smaller ESS of the indicators ``x <= q_0.05`` and ``x <= q_0.95``;
- **R-hat**: the larger split R-hat of the rank-normalized draws and of the rank-normalized
  folded draws ``|x - median|`` (which catches chains that differ in scale only).

Draws have shape ``(num_chains, num_draws, *param_shape)``: the diagnostics run on the host
(NumPy), after sampling, not inside ``jit``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import scipy.stats
from numpyro import diagnostics as _numpyro

from probgen.core.errors import SettingError

__all__ = ["bulk_ess", "mcmc_summary", "rank_normalized_rhat", "tail_ess"]


def _chains(samples: Any, where: str) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] < 1 or x.shape[1] < 4:
        raise SettingError(
            f"{where}: samples must have shape (num_chains, num_draws, *param_shape) with at least "
            f"4 draws per chain, got {x.shape}")
    return x


def _split(x: np.ndarray) -> np.ndarray:
    """Each chain cut in two halves (an odd last draw dropped): ``(2 * chains, draws // 2, ...)``."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, half:2 * half]], axis=0)


def _rank_normalize(x: np.ndarray) -> np.ndarray:
    """Pooled fractional ranks through the normal quantile function (Blom offsets), per parameter."""
    flat = x.reshape(-1, *x.shape[2:])
    ranks = scipy.stats.rankdata(flat, axis=0)
    z = scipy.stats.norm.ppf((ranks - 0.375) / (flat.shape[0] + 0.25))
    return z.reshape(x.shape)


def bulk_ess(samples: Any) -> np.ndarray:
    """Bulk effective sample size: the ESS of the rank-normalized split chains.

    Example:
        >>> import numpy as np, probgen as pg
        >>> draws = np.random.default_rng(0).normal(size=(4, 1000))
        >>> 3000 < float(pg.mc.bulk_ess(draws)) < 5000  # independent draws: about 4000
        True
    """
    x = _chains(samples, "bulk_ess")
    return _numpyro.effective_sample_size(_split(_rank_normalize(x)))


def tail_ess(samples: Any, prob: float = 0.9) -> np.ndarray:
    """Tail effective sample size: the smaller ESS of ``1[x <= q_a]`` and ``1[x <= q_{1-a}]``, ``a = (1 - prob) / 2``.

    Example:
        >>> import numpy as np, probgen as pg
        >>> draws = np.random.default_rng(0).normal(size=(4, 1000))
        >>> 2500 < float(pg.mc.tail_ess(draws)) < 5500
        True
    """
    if not 0.0 < prob < 1.0:
        raise SettingError(f"tail_ess: prob must lie in (0, 1), got {prob!r}")
    x = _chains(samples, "tail_ess")
    low, high = np.quantile(x.reshape(-1, *x.shape[2:]), [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    split = _split(x)
    return np.minimum(_numpyro.effective_sample_size((split <= low).astype(np.float64)),
                      _numpyro.effective_sample_size((split <= high).astype(np.float64)))


def rank_normalized_rhat(samples: Any) -> np.ndarray:
    """Rank-normalized split R-hat: the larger of the bulk and the folded (scale) statistics.

    Example:
        >>> import numpy as np, probgen as pg
        >>> draws = np.random.default_rng(0).normal(size=(4, 1000))
        >>> float(pg.mc.rank_normalized_rhat(draws)) < 1.01
        True
    """
    x = _chains(samples, "rank_normalized_rhat")
    folded = np.abs(x - np.median(x.reshape(-1, *x.shape[2:]), axis=0))
    bulk = _numpyro.split_gelman_rubin(_rank_normalize(x))
    scale = _numpyro.split_gelman_rubin(_rank_normalize(folded))
    return np.maximum(bulk, scale)


class MCMCSummary(dict):
    """``name -> {statistic -> array}``; ``str()`` of it is the table (one row per scalar parameter)."""

    def __init__(self, columns: tuple[str, ...]):
        super().__init__()
        self.columns = columns

    def __str__(self) -> str:
        rows = [("",) + self.columns]
        for name, stats in self.items():
            shape = np.shape(stats["mean"])
            for index in np.ndindex(*shape):
                label = name + (str(list(index)) if shape else "")
                rows.append((label,) + tuple(f"{float(np.asarray(stats[c])[index]):.3g}" for c in self.columns))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows)


def mcmc_summary(samples: Mapping[str, Any] | Any, prob: float = 0.9) -> MCMCSummary:
    """Posterior summary of MCMC draws: mean, sd, quantiles, bulk / tail ESS and R-hat.

    Args:
      samples: an array ``(num_chains, num_draws, *shape)`` or a mapping of name -> such
        arrays (e.g. ``{"mu": ..., "tau": ...}``).
      prob: the central interval reported by the quantile columns (default 0.9: ``q5``, ``q95``).

    Returns:
      An :class:`MCMCSummary` (a dict ``name -> {statistic -> array}``); print it for the table.

    Example:
        >>> import numpy as np, probgen as pg
        >>> rng = np.random.default_rng(0)
        >>> table = pg.mc.mcmc_summary({"mu": 1.0 + rng.normal(size=(4, 500))})
        >>> round(float(table["mu"]["mean"]), 1), float(table["mu"]["r_hat"]) < 1.01
        (1.0, True)
    """
    if not 0.0 < prob < 1.0:
        raise SettingError(f"mcmc_summary: prob must lie in (0, 1), got {prob!r}")
    named = dict(samples) if isinstance(samples, Mapping) else {"x": samples}
    low_name, high_name = (f"q{100 * q:g}" for q in ((1 - prob) / 2, (1 + prob) / 2))
    table = MCMCSummary(("mean", "sd", low_name, "median", high_name, "bulk_ess", "tail_ess", "r_hat"))
    for name, value in named.items():
        x = _chains(value, f"mcmc_summary: {name!r}")
        pooled = x.reshape(-1, *x.shape[2:])
        low, median, high = np.quantile(pooled, [(1 - prob) / 2, 0.5, (1 + prob) / 2], axis=0)
        table[name] = {
            "mean": pooled.mean(axis=0), "sd": pooled.std(axis=0, ddof=1),
            low_name: low, "median": median, high_name: high,
            "bulk_ess": bulk_ess(x), "tail_ess": tail_ess(x, prob), "r_hat": rank_normalized_rhat(x),
        }
    return table

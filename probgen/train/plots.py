"""Matplotlib helpers: loss curves, sweep heat maps / lines, 2-D samples and densities, traces.

Every function takes data (numpy / JAX arrays, a history dict, a
:class:`~probgen.train.SweepResult`), draws on ``ax`` (a new figure when ``None``) and
returns the ``Axes`` so callers can style it further. Nothing is shown or saved.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from probgen.train.sweep import SweepResult, metric_values
from probgen.core.errors import SettingError


def _axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt  # noqa: PLC0415

    _, ax = plt.subplots()
    return ax


def loss_curve(history: Any, key: str = "loss", ax=None, smooth: int | None = None, log: bool = False):
    """Plot a training curve from a history dict (or a :class:`FitResult`).

    Args:
      history: dict of per-step arrays, or an object with ``.history``.
      key: which entry to plot.
      ax: matplotlib ``Axes`` (default: a new figure).
      smooth: optional moving-average window drawn over the raw curve.
      log: log-scale the y axis.

    Returns:
      The ``Axes``.

    Example:
        >>> import numpy as np, matplotlib
        >>> matplotlib.use("Agg")
        >>> ax = loss_curve({"loss": np.linspace(1, 0, 10)})
        >>> len(ax.lines)
        1
    """
    history = getattr(history, "history", history)
    if key not in history:
        raise KeyError(f"loss_curve: {key!r} is not in the history; it has {sorted(history)}")
    values = np.asarray(history[key], dtype=float)
    if values.ndim != 1:
        raise SettingError(f"loss_curve: history[{key!r}] must be 1-D (steps,), got {values.shape}")
    ax = _axes(ax)
    steps = np.arange(values.size)
    ax.plot(steps, values, lw=1, alpha=0.5 if smooth else 1.0, label=key)
    if smooth:
        kernel = np.ones(smooth) / smooth
        averaged = np.convolve(values, kernel, mode="valid")
        ax.plot(steps[smooth - 1:], averaged, lw=2, label=f"{key} (mean of {smooth})")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    return ax


def sweep_plot(result: SweepResult, metric: str | Callable = "loss", ax=None, log_axes: Sequence[str] = ()):
    """Plot a sweep: lines for a 1-D grid, a heat map for a 2-D grid.

    Args:
      result: a :class:`SweepResult` with one or two axes.
      metric: see :func:`probgen.train.metric_values` (default: final loss).
      ax: matplotlib ``Axes``.
      log_axes: axis names to show on a log scale (1-D sweeps), e.g. ``("learning_rate",)``.

    Returns:
      The ``Axes`` (the heat map's image is ``ax.images[0]``).

    Example:
        >>> import numpy as np, matplotlib
        >>> matplotlib.use("Agg")
        >>> from probgen.train import SweepResult
        >>> r = SweepResult({"a": np.array([1.0, 2.0]), "b": np.array([0.0, 1.0, 2.0])},
        ...                 {"score": np.arange(6.0).reshape(2, 3)})
        >>> sweep_plot(r, "score").images[0].get_array().shape
        (2, 3)
    """
    values = metric_values(result, metric)
    names = list(result.axes)
    label = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
    ax = _axes(ax)
    if len(names) == 1:
        x = np.asarray(result.axes[names[0]])
        ax.plot(x, values, marker="o")
        ax.set_xlabel(names[0])
        ax.set_ylabel(label)
        if names[0] in log_axes:
            ax.set_xscale("log")
    elif len(names) == 2:
        image = ax.imshow(values, origin="lower", aspect="auto", cmap="viridis")
        ax.set_yticks(range(values.shape[0]), [f"{v:.3g}" for v in result.axes[names[0]]])
        ax.set_xticks(range(values.shape[1]), [f"{v:.3g}" for v in result.axes[names[1]]])
        ax.set_ylabel(names[0])
        ax.set_xlabel(names[1])
        ax.figure.colorbar(image, ax=ax, label=label)
    else:
        raise SettingError(
            f"sweep_plot draws 1-D or 2-D sweeps; this one has axes {names}. "
            "Slice it first (e.g. result.member) or plot with your own code."
        )
    return ax


def sweep_lines(result: SweepResult, metric: str | Callable = "loss", x: str | None = None, ax=None):
    """Plot a 2-D sweep as one line per value of the other axis, against axis ``x``.

    Example:
        >>> import numpy as np, matplotlib
        >>> matplotlib.use("Agg")
        >>> from probgen.train import SweepResult
        >>> r = SweepResult({"lr": np.array([0.1, 1.0]), "seed": np.array([0, 1, 2])},
        ...                 {"score": np.arange(6.0).reshape(2, 3)})
        >>> len(sweep_lines(r, "score", x="lr").lines)
        3
    """
    values = metric_values(result, metric)
    names = list(result.axes)
    if len(names) != 2:
        raise SettingError(f"sweep_lines needs a 2-D sweep, got axes {names}")
    x = names[0] if x is None else x
    if x not in names:
        raise SettingError(f"sweep_lines: x={x!r} is not a sweep axis {names}")
    other = names[1] if x == names[0] else names[0]
    if x != names[0]:
        values = values.T
    ax = _axes(ax)
    for j, v in enumerate(result.axes[other]):
        ax.plot(result.axes[x], values[:, j], marker="o", label=f"{other}={v:.3g}")
    ax.set_xlabel(x)
    ax.set_ylabel(metric if isinstance(metric, str) else "metric")
    ax.legend()
    return ax


def scatter_2d(samples: Any, ax=None, weights: Any = None, **kwargs):
    """Scatter 2-D samples (shape ``(n, 2)``), optionally sized by normalized weights.

    Example:
        >>> import numpy as np, matplotlib
        >>> matplotlib.use("Agg")
        >>> ax = scatter_2d(np.zeros((5, 2)))
        >>> ax.collections[0].get_offsets().shape
        (5, 2)
    """
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.shape[1] != 2:
        raise SettingError(f"scatter_2d: samples must have shape (n, 2), got {samples.shape}")
    ax = _axes(ax)
    if weights is not None:
        weights = np.asarray(weights, dtype=float)
        kwargs.setdefault("s", 200.0 * weights / weights.sum())
    kwargs.setdefault("alpha", 0.5)
    ax.scatter(samples[:, 0], samples[:, 1], **kwargs)
    return ax


def density_contour(
    log_density: Callable[[Any], Any],
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    ax=None,
    resolution: int = 100,
    levels: int = 10,
    filled: bool = False,
):
    """Contours of a 2-D density given its (unnormalized) log density.

    Args:
      log_density: maps an array of points ``(m, 2)`` to log densities ``(m,)``
        (a ``jax.vmap`` of a scalar function works).
      xlim, ylim: the plotted box.
      ax: matplotlib ``Axes``.
      resolution: grid points per side.
      levels: number of contour levels.
      filled: ``contourf`` instead of ``contour``.

    Returns:
      The ``Axes``.

    Example:
        >>> import numpy as np, matplotlib
        >>> matplotlib.use("Agg")
        >>> ax = density_contour(lambda p: -0.5 * (p ** 2).sum(-1), (-3, 3), (-3, 3), resolution=20)
        >>> len(ax.collections) > 0
        True
    """
    xs = np.linspace(*xlim, resolution)
    ys = np.linspace(*ylim, resolution)
    grid_x, grid_y = np.meshgrid(xs, ys)
    points = np.stack([grid_x.ravel(), grid_y.ravel()], axis=-1)
    log_values = np.asarray(log_density(points), dtype=float).reshape(grid_x.shape)
    density = np.exp(log_values - np.nanmax(log_values))
    ax = _axes(ax)
    (ax.contourf if filled else ax.contour)(grid_x, grid_y, density, levels=levels)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    return ax


def trace_plot(samples: Any, ax=None, names: Sequence[str] | None = None):
    """MCMC / SMC diagnostics: one line per chain (or per dimension) over the steps.

    Args:
      samples: ``(steps,)``, ``(steps, chains)`` — e.g. the ``keep="all"`` output of
        ``pg.run``, or a per-step diagnostic such as an SMC ESS or log-marginal estimate.
      ax: matplotlib ``Axes``.
      names: labels of the lines.

    Returns:
      The ``Axes``.

    Example:
        >>> import numpy as np, matplotlib
        >>> matplotlib.use("Agg")
        >>> len(trace_plot(np.zeros((50, 4))).lines)
        4
    """
    samples = np.asarray(samples, dtype=float)
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.ndim != 2:
        raise SettingError(f"trace_plot: samples must be (steps,) or (steps, chains), got {samples.shape}")
    ax = _axes(ax)
    for j in range(samples.shape[1]):
        label = names[j] if names is not None else (f"chain {j}" if samples.shape[1] > 1 else None)
        ax.plot(np.arange(samples.shape[0]), samples[:, j], lw=0.8, label=label)
    ax.set_xlabel("step")
    if samples.shape[1] > 1 or names is not None:
        ax.legend(fontsize="small")
    return ax

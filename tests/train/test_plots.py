import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from probgen.train import SweepResult, plots  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_loss_curve_plots_history():
    history = {"loss": np.linspace(2.0, 1.0, 20)}
    ax = plots.loss_curve(history, smooth=5, log=True)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), history["loss"])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), np.convolve(history["loss"], np.ones(5) / 5, "valid"))
    assert ax.get_yscale() == "log"
    with pytest.raises(KeyError, match="'elbo' is not in the history"):
        plots.loss_curve(history, key="elbo")


def test_sweep_heatmap_and_lines():
    values = np.arange(6.0).reshape(2, 3)
    result = SweepResult({"lr": np.array([0.1, 0.2]), "beta": np.array([1.0, 2.0, 3.0])}, {"score": values})
    ax = plots.sweep_plot(result, "score")
    np.testing.assert_array_equal(ax.images[0].get_array(), values)
    ax = plots.sweep_lines(result, "score", x="beta")
    assert len(ax.lines) == 2
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), values[1])
    one_d = SweepResult({"lr": np.array([0.1, 0.2])}, {"score": np.array([3.0, 1.0])})
    ax = plots.sweep_plot(one_d, "score", log_axes=("lr",))
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [3.0, 1.0])


def test_scatter_density_and_trace():
    samples = np.random.default_rng(0).normal(size=(30, 2))
    ax = plots.scatter_2d(samples)
    np.testing.assert_allclose(ax.collections[0].get_offsets(), samples)
    ax = plots.density_contour(lambda p: -0.5 * np.sum(p ** 2, -1), (-2, 2), (-2, 2), ax=ax, resolution=30)
    assert len(ax.collections) > 1
    chains = np.cumsum(np.ones((40, 3)), axis=0)
    ax = plots.trace_plot(chains)
    assert len(ax.lines) == 3
    np.testing.assert_array_equal(ax.lines[2].get_ydata(), chains[:, 2])
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        plots.scatter_2d(np.zeros((4, 3)))

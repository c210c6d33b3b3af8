"""Normalizing flows as distributions that stand at a sample site.

``Flow(params, layers)`` pushes a standard normal of dimension ``dim`` through the
layers. It is a :class:`pg.Distribution` *and* a registered pytree (params are the
leaves; the layers are static), so ``pg.sample("z", flow)`` draws pathwise (REPARAM by
default), the PATH strategy (sticking the landing) stops gradients through its
parameters in the density, and ``jax.grad`` of a guide's score reaches ``params``.

Why plain pytree params and not flax nnx modules: a flow's parameters are an argument
of the generative function (``guide.simulate(key, params)``), so that ``jax.grad`` over
that argument is the whole story, and they are what ``pg.sweep`` stacks per member. A
nested dict of arrays is the lightest such pytree. (A guide may still take an nnx or
equinox module as its argument: ``pg.fit`` and traces accept modules as parameters.)
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core.checks import static_int
from probgen.core.errors import SettingError
from probgen.distributions.protocol import Distribution
from probgen.flows import bijectors
from probgen.flows.nets import init_made, init_mlp

_LOG_2PI = float(np.log(2 * np.pi))


@jax.tree_util.register_pytree_node_class
class Flow(Distribution):
    """A normalizing flow: ``x = T_K(...(T_1(z)))``, ``z ~ N(0, I_dim)``.

    Args:
      params: a sequence with one parameter pytree per layer.
      layers: a sequence of static layers from :mod:`probgen.flows.bijectors`.
      dim: the event dimension.

    Example:
        >>> import jax, probgen as pg
        >>> params = pg.flows.init_realnvp(jax.random.key(0), dim=2)
        >>> flow = pg.flows.RealNVP(params)
        >>> x = flow.sample(jax.random.key(1))
        >>> x.shape, flow.log_prob(x).shape
        ((2,), ())
    """

    has_rsample = True

    def __init__(self, params: Sequence, layers: Sequence, dim: int):
        if len(params) != len(layers):
            raise SettingError(f"Flow: {len(params)} parameter sets for {len(layers)} layers")
        self.params = list(params)
        self.layers = tuple(layers)
        self.dim = int(dim)

    def tree_flatten(self):
        return (self.params,), (self.layers, self.dim)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.params, (obj.layers, obj.dim) = list(children[0]), aux
        return obj

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return ()

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    def forward(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Map base draws to data: returns ``(x, log|det dx/dz|)`` (one vector)."""
        total = jnp.zeros(())
        for layer, p in zip(self.layers, self.params):
            z, log_det = layer.forward(p, z)
            total = total + log_det
        return z, total

    def inverse(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Map data to base: returns ``(z, log|det dz/dx|)`` (one vector)."""
        total = jnp.zeros(())
        for layer, p in zip(reversed(self.layers), reversed(self.params)):
            x, log_det = layer.inverse(p, x)
            total = total + log_det
        return x, total

    def _check(self, x):
        if jnp.shape(x)[-1:] != (self.dim,):
            raise SettingError(f"Flow.log_prob: value has shape {jnp.shape(x)}; expected trailing dimension {self.dim}")

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        """Pathwise draw(s) of shape ``sample_shape + (dim,)``."""
        return self.sample_and_log_prob(key, sample_shape)[0]

    def sample_and_log_prob(self, key: jax.Array, sample_shape: tuple[int, ...] = ()):
        """Draw and score in one forward pass (parallel for IAF, unlike ``log_prob``)."""
        z = jax.random.normal(key, tuple(sample_shape) + (self.dim,))
        fn = self.forward
        for _ in sample_shape:
            fn = jax.vmap(fn)
        x, log_det = fn(z)
        base = -0.5 * jnp.sum(z**2, -1) - 0.5 * self.dim * _LOG_2PI
        return x, base - log_det

    def log_prob(self, value: jax.Array) -> jax.Array:
        """Log density; leading axes of ``value`` are batch axes."""
        value = jnp.asarray(value)
        self._check(value)
        fn = self.inverse
        for _ in value.shape[:-1]:
            fn = jax.vmap(fn)
        z, log_det = fn(value)
        return -0.5 * jnp.sum(z**2, -1) - 0.5 * self.dim * _LOG_2PI + log_det


def _dim_from(params, name):
    if not isinstance(params, (list, tuple)) or not params:
        raise SettingError(f"{name}: params must be the non-empty list returned by init_{name.lower()}")
    return int(params[-1]["shift"].shape[-1])


def _check_dim(dim, name, minimum):
    static_int(dim, "dim", name, minimum=minimum)


def _final_affine(dim):
    return {"shift": jnp.zeros(dim), "log_scale": jnp.zeros(dim)}


def init_affine(key: jax.Array, dim: int) -> list[dict]:
    """Parameters of :func:`Affine` (identity map: a standard normal).

    Example:
        >>> import jax, probgen as pg
        >>> pg.flows.Affine(pg.flows.init_affine(jax.random.key(0), 3)).event_shape
        (3,)
    """
    _check_dim(dim, "init_affine", 1)
    return [{"shift": jnp.zeros(dim), "raw": jnp.zeros((dim, dim))}]


def Affine(params: list[dict]) -> Flow:
    """Full-covariance Gaussian as a flow: ``x = shift + L z``, ``L`` lower-triangular."""
    dim = _dim_from(params, "Affine")
    return Flow(params, (bijectors.TriangularAffine(),), dim)


def init_realnvp(key: jax.Array, dim: int, num_layers: int = 4, hidden: Sequence[int] = (32, 32)) -> list[dict]:
    """Parameters of :func:`RealNVP`: ``num_layers`` couplings then an elementwise affine.

    Each coupling starts at the identity (zero last layer).

    Example:
        >>> import jax, probgen as pg
        >>> p = pg.flows.init_realnvp(jax.random.key(0), dim=2, num_layers=2)
        >>> len(p)
        3
    """
    _check_dim(dim, "init_realnvp", 2)
    num_layers = static_int(num_layers, "num_layers", "init_realnvp")
    keys = jax.random.split(key, num_layers)
    layers = []
    for i, k in enumerate(keys):
        kept, moved = bijectors.halves(dim, i % 2)
        layers.append({"net": init_mlp(k, [len(kept), *hidden, 2 * len(moved)])})
    return layers + [_final_affine(dim)]


def RealNVP(params: list[dict]) -> Flow:
    """RealNVP flow (Dinh et al., 2017, "Density estimation using Real NVP").

    Args:
      params: from :func:`init_realnvp`.

    Example:
        >>> import jax, probgen as pg
        >>> flow = pg.flows.RealNVP(pg.flows.init_realnvp(jax.random.key(0), 2))
        >>> round(float(flow.log_prob(jax.numpy.zeros(2))), 4)  # identity at init
        -1.8379
    """
    dim = _dim_from(params, "RealNVP")
    layers = tuple(bijectors.AffineCoupling(i % 2) for i in range(len(params) - 1))
    return Flow(params, layers + (bijectors.ElementwiseAffine(),), dim)


def init_spline_flow(
    key: jax.Array, dim: int, num_layers: int = 4, hidden: Sequence[int] = (32, 32), num_bins: int = 8
) -> list[dict]:
    """Parameters of :func:`SplineFlow` (identity at init).

    Example:
        >>> import jax, probgen as pg
        >>> p = pg.flows.init_spline_flow(jax.random.key(0), 2, num_layers=2, num_bins=4)
        >>> p[0]["net"][-1]["w"].shape  # 1 transformed coordinate x (3 * 4 + 1) spline parameters
        (32, 13)
    """
    _check_dim(dim, "init_spline_flow", 2)
    num_layers = static_int(num_layers, "num_layers", "init_spline_flow")
    num_bins = static_int(num_bins, "num_bins", "init_spline_flow")
    keys = jax.random.split(key, num_layers)
    layers = []
    for i, k in enumerate(keys):
        kept, moved = bijectors.halves(dim, i % 2)
        layers.append({"net": init_mlp(k, [len(kept), *hidden, len(moved) * (3 * num_bins + 1)])})
    return layers + [_final_affine(dim)]


def SplineFlow(params: list[dict], bound: float = 5.0) -> Flow:
    """Rational-quadratic spline coupling flow (Durkan et al., 2019, "Neural Spline Flows").

    Args:
      params: from :func:`init_spline_flow`.
      bound: splines act on ``[-bound, bound]``; outside, each map is linear with its spline's learned end slope (the identity at init).

    Example:
        >>> import jax, probgen as pg
        >>> flow = pg.flows.SplineFlow(pg.flows.init_spline_flow(jax.random.key(0), 2))
        >>> flow.sample(jax.random.key(1), (5,)).shape
        (5, 2)
    """
    dim = _dim_from(params, "SplineFlow")
    layers = tuple(bijectors.SplineCoupling(i % 2, float(bound)) for i in range(len(params) - 1))
    return Flow(params, layers + (bijectors.ElementwiseAffine(),), dim)


def init_maf(key: jax.Array, dim: int, num_layers: int = 4, hidden: Sequence[int] = (32, 32)) -> list[dict]:
    """Parameters of :func:`MAF` / :func:`IAF`: ``num_layers`` MADE layers then an affine.

    Example:
        >>> import jax, probgen as pg
        >>> len(pg.flows.init_maf(jax.random.key(0), 3, num_layers=2))
        3
    """
    _check_dim(dim, "init_maf", 1)
    num_layers = static_int(num_layers, "num_layers", "init_maf")
    keys = jax.random.split(key, num_layers)
    layers = []
    for k in keys:
        net = init_made(k, dim, hidden, 2)
        net[-1]["w"] = jnp.zeros_like(net[-1]["w"])  # start at the identity
        layers.append({"net": net})
    return layers + [_final_affine(dim)]


def _autoregressive(params, kind, name):
    dim = _dim_from(params, name)
    layers = tuple(bijectors.Autoregressive(kind, bool(i % 2)) for i in range(len(params) - 1))
    return Flow(params, layers + (bijectors.ElementwiseAffine(),), dim)


def MAF(params: list[dict]) -> Flow:
    """Masked autoregressive flow (Papamakarios et al., 2017): parallel density, sequential sampling.

    Example:
        >>> import jax, probgen as pg
        >>> flow = pg.flows.MAF(pg.flows.init_maf(jax.random.key(0), 3))
        >>> flow.log_prob(jax.numpy.zeros((4, 3))).shape
        (4,)
    """
    return _autoregressive(params, "maf", "MAF")


def IAF(params: list[dict]) -> Flow:
    """Inverse autoregressive flow (Kingma et al., 2016): parallel sampling, sequential density.

    Best as a variational family (use ``sample_and_log_prob`` for draws and scores).

    Example:
        >>> import jax, probgen as pg
        >>> flow = pg.flows.IAF(pg.flows.init_maf(jax.random.key(0), 3))
        >>> flow.sample(jax.random.key(0)).shape
        (3,)
    """
    return _autoregressive(params, "iaf", "IAF")

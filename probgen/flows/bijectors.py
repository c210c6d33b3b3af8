"""Flow layers: static descriptions of invertible maps whose parameters are passed in.

A layer is a small frozen dataclass (hashable, static configuration only) with
``forward(params, x) -> (y, log_det)`` and ``inverse(params, y) -> (x, log_det)``, where
``log_det`` is log|det dy/dx| of that direction. ``x`` is one vector of shape ``(dim,)``;
batches go through ``jax.vmap``. Parameters are plain pytrees (see :mod:`nets`), so a
flow's parameters are ordinary generative-function arguments and ``jax.grad`` sees them.

Layers: :class:`ElementwiseAffine`, :class:`TriangularAffine`, :class:`AffineCoupling`
(RealNVP, Dinh et al. 2017), :class:`SplineCoupling` (rational-quadratic splines, Durkan
et al. 2019, :mod:`probgen.flows.spline`) and :class:`Autoregressive`
(MAF, Papamakarios et al. 2017 / IAF, Kingma et al. 2016, with a MADE conditioner).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from probgen.flows.nets import made, mlp
from probgen.flows.spline import rq_spline_forward, rq_spline_inverse


def halves(dim: int, parity: int) -> tuple[np.ndarray, np.ndarray]:
    """Static indices ``(kept, moved)`` of a coupling: ``index % 2 == parity`` is kept.

    Example:
        >>> from probgen.flows.bijectors import halves
        >>> [h.tolist() for h in halves(5, 0)]
        [[0, 2, 4], [1, 3]]
    """
    index = np.arange(dim)
    return index[index % 2 == parity], index[index % 2 != parity]


@dataclasses.dataclass(frozen=True)
class ElementwiseAffine:
    """``y = shift + exp(log_scale) * x``; params ``{"shift": (d,), "log_scale": (d,)}``."""

    def forward(self, params, x):
        return params["shift"] + jnp.exp(params["log_scale"]) * x, jnp.sum(params["log_scale"])

    def inverse(self, params, y):
        return (y - params["shift"]) * jnp.exp(-params["log_scale"]), -jnp.sum(params["log_scale"])


@dataclasses.dataclass(frozen=True)
class TriangularAffine:
    """``y = shift + L x`` with ``L`` lower-triangular, positive diagonal ``exp(diag(raw))``.

    Params ``{"shift": (d,), "raw": (d, d)}`` (only the lower triangle of ``raw`` is used).
    """

    def _tril(self, raw):
        return jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diag(raw)))

    def forward(self, params, x):
        return params["shift"] + self._tril(params["raw"]) @ x, jnp.sum(jnp.diag(params["raw"]))

    def inverse(self, params, y):
        L = self._tril(params["raw"])
        x = jax.scipy.linalg.solve_triangular(L, y - params["shift"], lower=True)
        return x, -jnp.sum(jnp.diag(params["raw"]))


@dataclasses.dataclass(frozen=True)
class AffineCoupling:
    """RealNVP affine coupling: coordinates with ``index % 2 == parity`` condition the rest.

    Params ``{"net": mlp}`` mapping the ``k`` kept coordinates to ``2m`` outputs (shift and
    raw log-scale of the ``m`` transformed ones); the log-scale is ``2 tanh(raw / 2)`` so
    one layer never scales by more than ``e^2``.
    """

    parity: int

    def _shift_logscale(self, params, x):
        kept, moved = halves(x.shape[-1], self.parity)
        out = mlp(params["net"], x[..., kept])
        shift, raw = jnp.split(out, 2, axis=-1)
        return moved, shift, 2.0 * jnp.tanh(raw / 2.0)

    def forward(self, params, x):
        moved, shift, log_scale = self._shift_logscale(params, x)
        y = x.at[..., moved].set(x[..., moved] * jnp.exp(log_scale) + shift)
        return y, jnp.sum(log_scale, axis=-1)

    def inverse(self, params, y):
        moved, shift, log_scale = self._shift_logscale(params, y)  # kept coordinates equal x's
        x = y.at[..., moved].set((y[..., moved] - shift) * jnp.exp(-log_scale))
        return x, -jnp.sum(log_scale, axis=-1)


@dataclasses.dataclass(frozen=True)
class SplineCoupling:
    """Coupling with monotone rational-quadratic splines on ``[-bound, bound]``.

    Params ``{"net": mlp}`` mapping the ``k`` kept coordinates to ``m (3K + 1)`` spline
    parameters of the ``m`` transformed ones, for ``K`` bins, read as by
    :func:`~probgen.flows.rq_spline_forward`. Outside the interval each spline is linear with
    its end knot's slope (the identity when the network outputs zeros, as at initialization).
    """

    parity: int
    bound: float = 5.0

    def _spline_params(self, params, x):
        kept, moved = halves(x.shape[-1], self.parity)
        return moved, mlp(params["net"], x[kept]).reshape(len(moved), -1)

    def forward(self, params, x):
        moved, spline = self._spline_params(params, x)
        y, log_det = rq_spline_forward(spline, x[moved], self.bound)
        return x.at[moved].set(y), jnp.sum(log_det)

    def inverse(self, params, y):
        moved, spline = self._spline_params(params, y)  # kept coordinates equal x's
        x, log_det = rq_spline_inverse(spline, y[moved], self.bound)
        return y.at[moved].set(x), jnp.sum(log_det)


@dataclasses.dataclass(frozen=True)
class Autoregressive:
    """Masked autoregressive affine layer with a MADE conditioner.

    The parallel map is ``P(u) = u * exp(s(u)) + m(u)`` with ``s_i, m_i`` depending on
    ``u_{<i}`` (order reversed when ``flip``). ``kind="maf"``: density is parallel
    (inverse = ``P``), sampling takes ``dim`` sequential passes. ``kind="iaf"``: sampling
    is parallel (forward = ``P``), density is sequential.
    Params ``{"net": made}`` with ``2 * dim`` outputs.
    """

    kind: str = "maf"
    flip: bool = False

    def _order(self, x):
        return x[::-1] if self.flip else x

    def _shift_logscale(self, params, u):
        out = made(params["net"], u)
        shift, raw = jnp.split(out, 2, axis=-1)
        return shift, 2.0 * jnp.tanh(raw / 2.0)

    def _parallel(self, params, u):
        u = self._order(u)
        shift, log_scale = self._shift_logscale(params, u)
        return self._order(u * jnp.exp(log_scale) + shift), jnp.sum(log_scale)

    def _sequential_inverse(self, params, v):
        v = self._order(v)

        # After pass i the first i+1 coordinates are exact, so dim passes invert P.
        def body(_, u):
            shift, log_scale = self._shift_logscale(params, u)
            return (v - shift) * jnp.exp(-log_scale)

        u = jax.lax.fori_loop(0, v.shape[-1], body, jnp.zeros_like(v))
        _, log_scale = self._shift_logscale(params, u)
        return self._order(u), -jnp.sum(log_scale)

    def forward(self, params, x):
        if self.kind == "iaf":
            return self._parallel(params, x)
        return self._sequential_inverse(params, x)

    def inverse(self, params, y):
        if self.kind == "iaf":
            return self._sequential_inverse(params, y)
        return self._parallel(params, y)

"""Autoguides: variational families built from a model, and the MAP and Laplace approximations.

``autoguide(model, observations, *model_args, family=...)`` finds every unobserved latent
of ``model`` (inside ``pg.scan``, ``pg.vmap`` and nested calls too, with their leading
axes) by tracing ``model.generate`` with ``jax.eval_shape``, and returns an
:class:`AutoGuide`: a generative function over exactly those addresses, so it is directly
the ``guide`` of every ``pg.vi`` objective.

How it works. The latents are laid out as one flat vector ``u`` of their *unconstrained*
coordinates (in the order of ``guide.latents``). The family is a distribution ``q(u)`` on
``R^D``; a draw is mapped site by site onto each latent's support by
``x = biject_to(support)(u)`` (numpyro's bijections, the ones gradient-based MCMC uses),
and the guide's log density of ``x`` carries the log-det Jacobian:
``log q(x) = log q(u) - log|det dx/du|``. So a scale with a HalfNormal prior gets a
log-normal factor, a probability a logit-normal one, with no user code. When every
latent's support is fixed (read once, when the guide is made) the bijections are applied
directly and the guide never runs the model. A support computed in the run, such as
``Uniform(low=a, ...)`` with a latent ``a``, is handled by running the model itself on ``u``
(:func:`probgen.core.unconstrained.assess_unconstrained`), in the model's order, so it uses
the guide's own value of ``a``; such a guide draws (``simulate``, every objective that only
draws from the guide, ``sample_posterior``) but cannot score *given* values (``assess``,
``update``, RWS, forward χ²): that raises an :class:`ArgumentError` naming the latent. The
supports are those of the ``observations`` and ``model_args`` given to :func:`autoguide`:
the arguments the guide receives after its params are accepted and ignored.

Families:

* ``"normal"``: mean-field Normal, ``params = {"loc": (D,), "log_scale": (D,)}``;
* ``"mvn"``: full-rank Normal ``u = loc + L ε`` with ``L = tril(tril, -1) + diag(exp(log_scale))``,
  ``params = {"loc", "log_scale", "tril": (D, D)}`` (only the strict lower triangle of
  ``tril`` is used);
* ``"lowrank"``: covariance ``W Wᵀ + diag(exp(log_scale))²``,
  ``params = {"loc", "log_scale", "cov_factor": (D, rank)}``;
* ``"delta"``: a point mass at ``x = T(loc)`` (MAP), ``params = {"loc"}``;
* a normalizing flow: ``family=pg.flows.IAF`` (any ``params -> distribution on R^D``
  constructor) with ``flow_init=pg.flows.init_maf`` (``(key, dim) -> params``);
  ``u = loc + draw``, ``params = {"loc", "flow"}``. pg.flows sits above pg.vi in the
  layers, so the flow is passed in rather than named by a string.

``pg.vi.laplace`` gives the Laplace approximation as an ``"mvn"`` AutoGuide and its params.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from probgen.core import handlers, validation
from probgen.core.checks import static_int
from probgen.core.compiled import compiled_call
from probgen.core.choicemap import ChoiceMap, as_choicemap, format_address, select
from probgen.core.errors import ArgumentError, ConstraintError, MissingChoiceError, SettingError
from probgen.core.gfi import GenerativeFunction, Mode
from probgen.core.trace import Trace
from probgen.core.unconstrained import assess_unconstrained, latent_sites, unconstrained_shapes
from probgen.core.validation import ValidationError
from probgen.distributions import protocol
from probgen.core.keys import particle_keys

FAMILIES = ("normal", "mvn", "lowrank", "delta")
INITS = ("uniform", "prior")
_FLOW_NAMES = ("iaf", "realnvp", "maf", "spline", "flow")
_LOG_2PI = math.log(2 * math.pi)


class _Family(NamedTuple):
    """A family on ``R^D``: ``init(key, loc, init_scale) -> params``, ``sample(params, key) ->
    (u, log q(u))`` (pathwise), ``log_prob(params, u)``; ``keys`` names the params' entries."""

    name: str
    keys: tuple
    init: Callable
    sample: Callable
    log_prob: Callable


def _standard_normal_log_prob(eps: jax.Array) -> jax.Array:
    return -0.5 * jnp.sum(eps**2) - 0.5 * eps.shape[-1] * _LOG_2PI


def _normal_family() -> _Family:
    def init(key, loc, init_scale):
        return {"loc": loc, "log_scale": jnp.full_like(loc, math.log(init_scale))}

    def sample(params, key):
        eps = jax.random.normal(key, params["loc"].shape, params["loc"].dtype)
        u = params["loc"] + jnp.exp(params["log_scale"]) * eps
        return u, _standard_normal_log_prob(eps) - jnp.sum(params["log_scale"])

    def log_prob(params, u):
        eps = (u - params["loc"]) * jnp.exp(-params["log_scale"])
        return _standard_normal_log_prob(eps) - jnp.sum(params["log_scale"])

    return _Family("normal", ("loc", "log_scale"), init, sample, log_prob)


def _scale_tril(params) -> jax.Array:
    return jnp.tril(params["tril"], -1) + jnp.diag(jnp.exp(params["log_scale"]))


def _mvn_family() -> _Family:
    def init(key, loc, init_scale):
        size = loc.shape[0]
        return {"loc": loc, "log_scale": jnp.full_like(loc, math.log(init_scale)),
                "tril": jnp.zeros((size, size), loc.dtype)}

    def sample(params, key):
        eps = jax.random.normal(key, params["loc"].shape, params["loc"].dtype)
        u = params["loc"] + _scale_tril(params) @ eps
        return u, _standard_normal_log_prob(eps) - jnp.sum(params["log_scale"])

    def log_prob(params, u):
        eps = solve_triangular(_scale_tril(params), u - params["loc"], lower=True)
        return _standard_normal_log_prob(eps) - jnp.sum(params["log_scale"])

    return _Family("mvn", ("loc", "log_scale", "tril"), init, sample, log_prob)


def _lowrank_family(rank: int) -> _Family:
    def init(key, loc, init_scale):
        # Small random factors: W = 0 is a stationary point of the expected objective.
        factor = 0.5 * init_scale / math.sqrt(rank) * jax.random.normal(key, (loc.shape[0], rank), loc.dtype)
        return {"loc": loc, "log_scale": jnp.full_like(loc, math.log(init_scale)), "cov_factor": factor}

    def sample(params, key):
        k_factor, k_diag = jax.random.split(key)
        dtype = params["loc"].dtype
        eps_factor = jax.random.normal(k_factor, (rank,), dtype)
        eps_diag = jax.random.normal(k_diag, params["loc"].shape, dtype)
        u = params["loc"] + params["cov_factor"] @ eps_factor + jnp.exp(params["log_scale"]) * eps_diag
        return u, log_prob(params, u)

    def log_prob(params, u):
        # N(u; loc, W Wᵀ + D²) by the Woodbury identity and the matrix determinant lemma, with
        # the capacitance C = I + Wᵀ D⁻² W (rank x rank): O(D rank²), no D x D matrix.
        residual, inverse_var = u - params["loc"], jnp.exp(-2 * params["log_scale"])
        scaled = params["cov_factor"].T * inverse_var
        capacitance = jnp.linalg.cholesky(jnp.eye(rank, dtype=residual.dtype) + scaled @ params["cov_factor"])
        projected = solve_triangular(capacitance, scaled @ residual, lower=True)
        log_det = 2 * jnp.sum(params["log_scale"]) + 2 * jnp.sum(jnp.log(jnp.diag(capacitance)))
        mahalanobis = jnp.sum(residual**2 * inverse_var) - jnp.sum(projected**2)
        return -0.5 * (residual.shape[0] * _LOG_2PI + log_det + mahalanobis)

    return _Family("lowrank", ("loc", "log_scale", "cov_factor"), init, sample, log_prob)


def _delta_family() -> _Family:
    def init(key, loc, init_scale):
        return {"loc": loc}

    def sample(params, key):
        return params["loc"], jnp.zeros((), params["loc"].dtype)

    return _Family("delta", ("loc",), init, sample, None)


def _flow_family(constructor: Callable, flow_init: Callable, name: str) -> _Family:
    def init(key, loc, init_scale):
        flow = flow_init(key, loc.shape[0])
        flow = jax.tree.map(lambda p: jnp.asarray(p, loc.dtype) if jnp.issubdtype(jnp.asarray(p).dtype, jnp.floating)
                            else p, flow)
        return {"loc": loc, "flow": flow}

    def sample(params, key):
        flow = constructor(params["flow"])
        if hasattr(flow, "sample_and_log_prob"):  # one pass (parallel for an IAF)
            draw, log_q = flow.sample_and_log_prob(key)
        else:
            draw = flow.sample(key)
            log_q = flow.log_prob(draw)
        return params["loc"] + draw, jnp.sum(log_q)

    def log_prob(params, u):
        return jnp.sum(constructor(params["flow"]).log_prob(u - params["loc"]))

    return _Family(name, ("loc", "flow"), init, sample, log_prob)


def _method(guide: "AutoGuide", name: str) -> Callable:
    """A guide's method as a program for :func:`compiled_call` (compiled once per guide,
    apart under ``pg.validate``): op by op, the model's machinery is slow to dispatch."""
    return getattr(guide, name)


class _Supports(handlers.Interceptor):
    """Records the support of every site drawn while a model is traced (its latents)."""

    def __init__(self):
        self.found: dict = {}

    def draw(self, site, key):
        self.found[site.address] = protocol.support(site.dist)
        return None


def _is_fixed(constraint: Any) -> bool:
    """Whether a numpyro constraint holds no traced value (its bounds do not depend on the run)."""
    for value in vars(constraint).values():
        if isinstance(value, jax.core.Tracer):
            return False
        if hasattr(value, "check") and hasattr(value, "__dict__") and not _is_fixed(value):
            return False
    return True


def _fixed_bijections(model, observations: ChoiceMap, model_args: tuple, latents: list):
    """``({address: biject_to(support)}, [])`` when every latent's support is fixed, else
    ``(None, names of the latents whose support is not)``.

    Supports are read while ``model.generate`` is traced (``jax.eval_shape``); one whose bounds
    are computed in the run (another latent, or arrays built inside the model) is not fixed.
    """
    from numpyro.distributions.transforms import biject_to

    recorder = _Supports()
    with handlers.handle(recorder):
        jax.eval_shape(lambda key: model.generate(key, observations, *model_args)[1], jax.random.key(0))
    supports = {a: recorder.found.get(a) for a in latents}
    dynamic = [format_address(a) for a, support in supports.items() if support is None or not _is_fixed(support)]
    if dynamic:
        return None, dynamic
    return {a: biject_to(support) for a, support in supports.items()}, []


class AutoGuide(GenerativeFunction):
    """A variational family over every continuous latent of a model (made by :func:`autoguide`).

    Call it as a guide: ``guide.simulate(key, params, *args)`` (the arguments after
    ``params`` are accepted and ignored, so objectives can pass the model's), and its
    choices are the model's latent addresses in the model's own coordinates.

    Attributes:
      model: the generative function it approximates the posterior of.
      family: the family's name (``"normal"``, ``"mvn"``, ``"lowrank"``, ``"delta"`` or the flow's).
      latents: ``{name: ShapeDtypeStruct}`` of each latent's value (``"path/z"`` names the
        hierarchical address ``("path", "z")``; a latent inside ``pg.scan`` has the time axis).
      addresses: ``{name: address tuple}``.
      num_dims: ``D``, the number of unconstrained coordinates (the length of ``params["loc"]``).
      dtype: the dtype of the parameters and of ``u``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     w = pg.sample("w", pg.Dirichlet(jnp.ones(3)))
        ...     pg.sample("x", pg.Categorical(probs=w))
        >>> guide = pg.vi.autoguide(model, {"x": 2}, family="mvn")
        >>> guide, guide.num_dims   # a simplex of 3 has 2 unconstrained coordinates
        (AutoGuide(model, mvn; w: float32[3]), 2)
    """

    def __init__(self, model: GenerativeFunction, observations: ChoiceMap, model_args: tuple, latents: list,
                 shapes: ChoiceMap, unconstrained: dict, bijections: dict | None, dynamic: list, family: _Family,
                 init: Any, init_scale: float, radius: float, path: bool):
        self.model, self.observations, self.model_args = model, observations, model_args
        self.addresses = {format_address(a): a for a in latents}
        self.latents = {format_address(a): shapes[a] for a in latents}
        self._unconstrained = {format_address(a): unconstrained[a] for a in latents}
        self._bijections, self._dynamic = bijections, dynamic
        self._sizes = [int(np.prod(s.shape, dtype=int)) for s in self._unconstrained.values()]
        self.num_dims = sum(self._sizes)
        self.dtype = jnp.result_type(*[s.dtype for s in self._unconstrained.values()])
        self._family = family
        self.family = family.name
        self._init, self._init_scale, self._radius, self._path = init, init_scale, radius, path
        self.__name__ = f"autoguide({model.__name__}, {family.name})"

    # -- coordinates ----------------------------------------------------------------------
    def _positions(self, u: jax.Array) -> ChoiceMap:
        """The flat vector ``u`` split into the latents' unconstrained values."""
        pieces = jnp.split(u, np.cumsum(self._sizes)[:-1]) if len(self._sizes) > 1 else [u]
        return ChoiceMap({self.addresses[n]: piece.reshape(s.shape).astype(s.dtype)
                          for piece, (n, s) in zip(pieces, self._unconstrained.items())})

    def _flatten(self, positions: ChoiceMap) -> jax.Array:
        return jnp.concatenate([jnp.ravel(positions[a]).astype(self.dtype) for a in self.addresses.values()])

    def _selection(self, relative: bool = False):
        # The model runs inside this GF's address scope: its sites' full addresses carry the prefix.
        prefix = () if relative else handlers.full_address(())
        return select(*(prefix + a for a in self.addresses.values()))

    def _to_values(self, u: jax.Array, log_det: bool = True) -> tuple[ChoiceMap, jax.Array]:
        """``(x, Σ log|det dx/du|)``: the latents' values at the flat unconstrained ``u``.

        With every support fixed (known when the guide was made) each site's bijection is
        applied directly. Otherwise the model runs on ``u`` in its own order (a support may
        depend on other latents), and the log-det is its latent scores (densities of ``u``)
        minus the model's own at ``x`` (a second run).
        """
        positions = self._positions(u)
        if self._bijections is not None:
            values, total = {}, jnp.zeros((), self.dtype)
            for name, address in self.addresses.items():
                bijection, coordinates = self._bijections[address], positions[address]
                value = bijection(coordinates)
                if log_det:
                    total = total + jnp.sum(bijection.log_abs_det_jacobian(coordinates, value))
                values[address] = value.astype(self.latents[name].dtype)
            return ChoiceMap(values), total
        forward = assess_unconstrained(self.model, positions.merge(self.observations), self.model_args,
                                       self._selection())
        latents = self._selection(relative=True)
        values = forward.choices.filter(latents)
        if not log_det:
            return values, jnp.zeros((), self.dtype)
        plain = assess_unconstrained(self.model, values.merge(self.observations), self.model_args, select())
        return values, self.model.project(forward, latents) - self.model.project(plain, latents)

    def _to_coordinates(self, values: ChoiceMap) -> jax.Array:
        """The flat unconstrained coordinates of latent ``values`` (needs fixed supports)."""
        if self._bijections is None:
            raise ArgumentError(
                f"{self.__name__}: the support of latent(s) {', '.join(repr(n) for n in self._dynamic)} is "
                "computed while the model runs (from another latent, or arrays built inside the model), so "
                "given values cannot be mapped to the guide's coordinates: assess / generate with values / "
                "update, init='prior' or a dict, and laplace(at={...}) need fixed supports (drawing, fitting "
                "with elbo / iwae / vimco / renyi and sample_posterior work)")
        return self._flatten(ChoiceMap({a: self._bijections[a].inv(jnp.asarray(values[a]))
                                        for a in self.addresses.values()}))

    def _log_joint(self, u: jax.Array) -> jax.Array:
        """``log p(observations, T(u)) + log|det J(u)|``: the unnormalized log posterior of ``u``."""
        return assess_unconstrained(self.model, self._positions(u).merge(self.observations), self.model_args,
                                    self._selection()).score

    # -- parameters ----------------------------------------------------------------------
    def init_params(self, key: jax.Array) -> dict:
        """Initial parameters: a dict of arrays in the latents' dtype.

        ``loc`` starts at the ``init`` point of :func:`autoguide` in unconstrained
        coordinates (by default uniform on ``(-radius, radius)``, Stan's and NumPyro's
        choice); scales start at ``init_scale``. ``jax.vmap`` over keys for a sweep.

        Example:
            >>> import jax, probgen as pg
            >>> @pg.gen
            ... def model():
            ...     pg.sample("s", pg.HalfNormal(1.0))
            >>> guide = pg.vi.autoguide(model, {})
            >>> sorted(guide.init_params(jax.random.key(0)))
            ['loc', 'log_scale']
        """
        return compiled_call(_method, (self, "_init_impl"), key)

    def _init_impl(self, key: jax.Array) -> dict:
        k_loc, k_family = jax.random.split(key)
        if isinstance(self._init, Mapping):
            loc = self._unconstrain_values(self._init, "init")
        elif self._init == "prior":
            trace, _ = self.model.generate(k_loc, self.observations, *self.model_args)
            loc = self._to_coordinates(trace.choices.filter(self._selection(relative=True)))
        else:
            loc = jax.random.uniform(k_loc, (self.num_dims,), self.dtype, -self._radius, self._radius)
        return self._family.init(k_family, loc, self._init_scale)

    def _unconstrain_values(self, values: Mapping, where: str) -> jax.Array:
        """The flat unconstrained vector of latent ``values`` given as ``{name: value}``."""
        if set(values) != set(self.latents):
            raise ArgumentError(
                f"{self.__name__}: {where} must give a value for every latent {sorted(self.latents)} (by name), "
                f"got {sorted(values)}")
        values = ChoiceMap({self.addresses[n]: jnp.asarray(v) for n, v in values.items()})
        return compiled_call(_method, (self, "_to_coordinates"), values)

    def _check_params(self, params: Any) -> None:
        expected = self._family.keys
        if not isinstance(params, Mapping) or set(params) != set(expected):
            got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
            raise ArgumentError(
                f"{self.__name__}: params must be a dict with the entries {list(expected)} "
                f"(from guide.init_params(key)), got {got}; the guide takes its params as its first argument")
        loc = params["loc"]
        if jnp.shape(loc) != (self.num_dims,):
            raise ArgumentError(
                f"{self.__name__}: params['loc'] has shape {tuple(jnp.shape(loc))}, expected ({self.num_dims},): "
                f"one entry per unconstrained coordinate of the latents {', '.join(self.latents)}")

    # -- the generative function ---------------------------------------------------------
    def _run(self, key, constraints, args, mode):
        if not args:
            raise ArgumentError(
                f"{self.__name__} takes its params first: guide.simulate(key, params, *model_args), with "
                "params from guide.init_params(key)")
        params = args[0]
        self._check_params(params)
        given = [a for a in self.addresses.values() if a in constraints]
        if mode is Mode.ASSESS and len(given) < len(self.addresses):
            missing = [format_address(a) for a in self.addresses.values() if a not in constraints]
            raise MissingChoiceError(
                f"assess of {self.__name__}: no value for the latent(s) {', '.join(repr(m) for m in missing)}; "
                "assess needs every choice")
        if given and len(given) < len(self.addresses):
            missing = [format_address(a) for a in self.addresses.values() if a not in constraints]
            raise ConstraintError(
                f"{self.__name__}: generate was given some latents but not {', '.join(repr(m) for m in missing)}; "
                "an autoguide's latents are joint, so give all of them or none")
        if given:
            values = {}
            for address in given:
                value, expected = jnp.asarray(constraints[address]), self.latents[format_address(address)]
                if value.shape != expected.shape:
                    raise ConstraintError(
                        f"{self.__name__}: the value given at {format_address(address)!r} has shape {value.shape}, "
                        f"but the latent has shape {expected.shape}")
                values[address] = value
            values = ChoiceMap(values)
            score = self._assess(params, values)
            return Trace(self, args, self._named(values), values, score, {}, None), score
        u, log_q = self._family.sample(params, key)
        if self._family.log_prob is None:   # delta: density 1 at its point, no Jacobian (MAP)
            values, _ = self._to_values(u, log_det=False)
            score = jnp.zeros((), self.dtype)
        else:
            values, log_det = self._to_values(u)
            if self._path:   # sticking the landing: no gradient to the params through log q's parameters
                log_q = self._family.log_prob(jax.lax.stop_gradient(params), u)
            score = log_q - log_det
        return Trace(self, args, self._named(values), values, score, {}, None), jnp.zeros_like(score)

    def _assess(self, params, values: ChoiceMap) -> jax.Array:
        if self._family.log_prob is None:   # delta: 0 at its point, -inf elsewhere
            point, _ = self._to_values(params["loc"], log_det=False)
            same = jnp.all(jnp.stack([jnp.all(values[a] == point[a]) for a in self.addresses.values()]))
            return jnp.where(same, 0.0, -jnp.inf).astype(self.dtype)
        u = self._to_coordinates(values)
        _, log_det = self._to_values(u)
        return self._family.log_prob(params, u) - log_det

    def _named(self, values: ChoiceMap) -> dict:
        return {n: values[a] for n, a in self.addresses.items()}

    # -- reading the posterior -------------------------------------------------------------
    def sample_posterior(self, key: jax.Array, params: Any, num_samples: int) -> dict:
        """``num_samples`` draws from the fitted guide, in the model's coordinates.

        Args:
          key: PRNG key.
          params: the guide's parameters (e.g. ``fit_result.params["guide"]``).
          num_samples: how many draws (static).

        Returns:
          ``{name: array of shape (num_samples, *latent shape)}`` with the names of
          :attr:`latents` (``"path/z"`` for a hierarchical address).

        Example:
            >>> import jax, probgen as pg
            >>> @pg.gen
            ... def model():
            ...     pg.sample("s", pg.HalfNormal(1.0))
            >>> guide = pg.vi.autoguide(model, {})
            >>> draws = guide.sample_posterior(jax.random.key(0), guide.init_params(jax.random.key(1)), 5)
            >>> draws["s"].shape, bool((draws["s"] > 0).all())
            ((5,), True)
        """
        num_samples = static_int(num_samples, "num_samples", f"{self.__name__}.sample_posterior")
        self._check_params(params)
        return compiled_call(_method, (self, "_draws_impl"), key, params, num_samples)

    def _draws_impl(self, key, params, num_samples: int) -> dict:
        def one(k):
            u, _ = self._family.sample(params, k)
            return self._named(self._to_values(u, log_det=False)[0])

        return jax.vmap(one)(particle_keys(key, num_samples))

    def median(self, params: Any) -> dict:
        """The constrained image ``T(loc)`` of the location: ``{name: value}``.

        For the Gaussian families it is the median of each latent's marginal (the maps are
        monotone per coordinate for scalar supports), not its mean or mode; for ``"delta"``
        it is the point estimate (the MAP).

        Example:
            >>> import jax.numpy as jnp, probgen as pg
            >>> @pg.gen
            ... def model():
            ...     pg.sample("s", pg.HalfNormal(1.0))
            >>> guide = pg.vi.autoguide(model, {}, family="delta")
            >>> float(guide.median({"loc": jnp.zeros(1)})["s"])   # exp(0)
            1.0
        """
        self._check_params(params)
        return compiled_call(_method, (self, "_median_impl"), params["loc"])

    def _median_impl(self, loc: jax.Array) -> dict:
        return self._named(self._to_values(loc, log_det=False)[0])

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {s.dtype}{list(s.shape)}" for n, s in self.latents.items())
        return f"AutoGuide({self.model.__name__}, {self.family}; {shapes})"


def _make_family(family: Any, rank: int | None, flow_init: Callable | None, num_dims: int) -> _Family:
    where = "autoguide"
    options = f"one of {list(FAMILIES)}, or a flow constructor such as pg.flows.IAF with flow_init=pg.flows.init_maf"
    if isinstance(family, str):
        if family.lower() in _FLOW_NAMES:
            raise SettingError(
                f"{where}: family={family!r} is a normalizing flow; pg.flows sits above pg.vi, so pass the flow "
                "in: family=pg.flows.IAF, flow_init=pg.flows.init_maf (or pg.flows.RealNVP with "
                "pg.flows.init_realnvp)")
        if family not in FAMILIES:
            raise SettingError(f"{where}: family must be {options}; got {family!r}")
        if rank is not None and family != "lowrank":
            raise SettingError(f"{where}: rank= applies to family='lowrank' only, not {family!r}")
        if flow_init is not None:
            raise SettingError(f"{where}: flow_init= applies to a flow family only, not {family!r}")
        if family == "normal":
            return _normal_family()
        if family == "mvn":
            return _mvn_family()
        if family == "delta":
            return _delta_family()
        rank = math.ceil(math.sqrt(num_dims)) if rank is None else static_int(rank, "rank", where)
        if rank > num_dims:
            raise SettingError(f"{where}: rank={rank} exceeds the number of unconstrained coordinates {num_dims}")
        return _lowrank_family(rank)
    if callable(family) and not isinstance(family, GenerativeFunction):
        name = getattr(family, "__name__", type(family).__name__)
        if flow_init is None:
            raise SettingError(
                f"{where}: the flow family {name} needs flow_init=, a function (key, dim) -> its params "
                "(e.g. pg.flows.init_maf for pg.flows.IAF)")
        if rank is not None:
            raise SettingError(f"{where}: rank= applies to family='lowrank' only, not to the flow {name}")
        return _flow_family(family, flow_init, name)
    raise SettingError(f"{where}: family must be {options}; got {family!r}")


def autoguide(model: GenerativeFunction, observations: Any, *model_args: Any, family: Any = "normal",
              rank: int | None = None, flow_init: Callable | None = None, init: Any = "uniform",
              init_scale: float = 0.1, radius: float = 2.0, path: bool = False) -> AutoGuide:
    """A variational family over every continuous latent of ``model`` given ``observations``.

    Each latent is moved onto the real line by the bijection of its support and the guide's
    density of the model's values carries the log-det Jacobian (see the module docstring),
    so a positive or bounded latent needs no hand-written transform. The guide is a
    generative function over exactly the model's latent addresses (``"path/z"`` inside a
    ``pg.scan`` has the time axis): pass it to any ``pg.vi`` objective and fit
    ``{"guide": guide.init_params(key)}``.

    Args:
      model: a generative function.
      observations: a dict or ``pg.ChoiceMap`` of the observed choices; every other choice is latent.
      *model_args: the model's arguments (they fix the latents' shapes and the supports).
      family: ``"normal"`` (mean-field), ``"mvn"`` (full rank), ``"lowrank"`` (low rank plus
        diagonal), ``"delta"`` (a point: MAP), or a flow constructor ``params -> distribution
        on R^D`` such as ``pg.flows.IAF`` or ``pg.flows.RealNVP`` (needs ``flow_init``).
      rank: the number of factors of ``"lowrank"`` (default ``ceil(sqrt(D))``).
      flow_init: ``(key, dim) -> flow params`` for a flow family (``pg.flows.init_maf`` for
        IAF, ``pg.flows.init_realnvp`` for RealNVP, which needs ``D >= 2``).
      init: where ``loc`` starts: ``"uniform"`` (each unconstrained coordinate uniform on
        ``(-radius, radius)``, Stan's and NumPyro's default), ``"prior"`` (a prior draw), or a
        dict ``{name: value}`` of latent values in the model's coordinates.
      init_scale: the initial scale of the Gaussian families in unconstrained coordinates
        (0.1, as NumPyro's AutoNormal).
      radius: half-width of the ``"uniform"`` initialization.
      path: stop the parameters' gradient through ``log q`` at drawn values (sticking the
        landing, Roeder et al. 2017, like ``pg.PATH``): a lower-variance ELBO gradient, biased
        in multi-sample bounds (IWAE, VIMCO, Rényi).

    Returns:
      An :class:`AutoGuide` with ``init_params(key)``, ``sample_posterior(key, params, n)``,
      ``median(params)``, ``latents``, and the generative-function methods.

    Raises:
      ArgumentError: a latent is discrete (the error names its address), a support has no
        known bijection onto the real line, or ``init`` gives values for a latent whose support
        is computed in the run (see the module docstring).
      SettingError: an unknown family or init (the error lists the options), an option that
        does not apply to the family, or no latent left.

    The ``"delta"`` family scores 0 at its point and its choices carry no Jacobian, so its ELBO
    is ``log p(observations, x)`` and fitting it finds the posterior mode *in the model's
    coordinates* (NumPyro's AutoDelta convention), e.g. the mode of ``sigma``'s posterior
    density, not of ``log sigma``'s.

    Fitting is ``pg.fit(pg.vi.elbo(model, guide), {"guide": guide.init_params(key)}, optimizer,
    key, data=observations, steps=...)``; then ``guide.median(result.params["guide"])`` or
    ``guide.sample_posterior(key, result.params["guide"], 1000)``.

    Example (a mean and a positive scale; ``batch`` is the observations):
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     mu = pg.sample("mu", pg.Normal(0.0, 1.0))
        ...     sigma = pg.sample("sigma", pg.HalfNormal(1.0))
        ...     pg.sample("y", pg.Normal(jnp.full(20, mu), sigma))
        >>> data = {"y": 1.0 + 0.5 * jax.random.normal(jax.random.key(0), (20,))}
        >>> guide = pg.vi.autoguide(model, data)
        >>> guide.latents
        {'mu': ShapeDtypeStruct(shape=(), dtype=float32), 'sigma': ShapeDtypeStruct(shape=(), dtype=float32)}
        >>> params = {"guide": guide.init_params(jax.random.key(1))}
        >>> jax.jit(jax.grad(pg.vi.elbo(model, guide).__call__))(params, jax.random.key(2), data)["guide"]["loc"].shape
        (2,)
    """
    if not isinstance(model, GenerativeFunction):
        raise ArgumentError(f"autoguide: model must be a generative function (@pg.gen), got {type(model).__name__}")
    observations = as_choicemap(observations)
    model_args = tuple(model_args)
    if isinstance(init, str) and init not in INITS:
        raise SettingError(f"autoguide: init must be one of {list(INITS)} or a dict of latent values, got {init!r}")
    if not isinstance(init, (str, Mapping)):
        raise SettingError(f"autoguide: init must be one of {list(INITS)} or a dict of latent values, "
                           f"got {type(init).__name__}")
    for name, value in (("init_scale", init_scale), ("radius", radius)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise SettingError(f"autoguide: {name} must be a positive number, got {value!r}")
    latents, shapes, _ = latent_sites(model, observations, model_args, "autoguide")
    unconstrained = unconstrained_shapes(model, observations, model_args, latents)
    num_dims = sum(int(np.prod(unconstrained[a].shape, dtype=int)) for a in latents)
    chosen = _make_family(family, rank, flow_init, num_dims)
    if path and chosen.log_prob is None:
        raise SettingError("autoguide: path=True (sticking the landing) needs a family with a density, not 'delta'")
    bijections, dynamic = _fixed_bijections(model, observations, model_args, latents)
    guide = AutoGuide(model, observations, model_args, latents, shapes, unconstrained, bijections, dynamic, chosen,
                      init, float(init_scale), float(radius), bool(path))
    if bijections is None and (isinstance(init, Mapping) or init == "prior"):
        guide._to_coordinates(ChoiceMap())   # raises: a start given as values needs fixed supports
    return guide


def laplace(model: GenerativeFunction, observations: Any, *model_args: Any, at: Mapping,
            newton_steps: int = 0) -> tuple[AutoGuide, dict]:
    """The Laplace approximation: a full-rank Gaussian in unconstrained coordinates at a mode.

    With ``u*`` the point ``at`` (moved by ``newton_steps`` Newton steps on the log density
    of ``u``), the result is the ``"mvn"`` :class:`AutoGuide` with ``loc = u*`` and covariance
    ``H⁻¹``, ``H`` the Hessian (``jax.hessian``) of ``-log p(observations, T(u)) - log|det J(u)|``
    at ``u*`` (the density of the unconstrained latents, as in NumPyro's AutoLaplaceApproximation
    and Stan's ``laplace``). On a Gaussian posterior over real latents it is exact.

    The textbook approximation sits at the mode of that density. A ``"delta"`` autoguide's
    point is the mode in the model's coordinates: the same for real-valued latents, but not
    for a constrained one (a scale), where a few Newton steps move it to the unconstrained mode.

    Args:
      model, observations, model_args: as for :func:`autoguide` (``*model_args``).
      at: the point: the params of an autoguide of the same model and observations (its
        ``"loc"`` is used, e.g. a fitted ``"delta"`` guide's), or ``{name: value}`` of every
        latent in the model's coordinates.
      newton_steps: Newton steps ``u <- u - H⁻¹ ∇`` before taking the Hessian (static; one
        lands exactly on the mode of a Gaussian posterior).

    Returns:
      ``(guide, params)``: the ``"mvn"`` AutoGuide and its parameters
      (``guide.sample_posterior(key, params, n)``, ``guide.median(params)``).

    Raises:
      ValidationError: ``H`` is not positive definite at the point (not a local mode): at
        once when the Hessian is known (called outside ``jit``), under ``pg.validate`` when traced.

    Example (a conjugate Normal model: the posterior is N(0.8, 0.2) exactly):
        >>> import jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(jnp.full(4, z), 1.0))
        >>> data = {"x": jnp.array([0.8, 1.2, 0.4, 1.6])}
        >>> guide, params = pg.vi.laplace(model, data, at={"z": 0.0}, newton_steps=1)
        >>> round(float(params["loc"][0]), 4), round(float(jnp.exp(2 * params["log_scale"][0])), 4)
        (0.8, 0.2)
    """
    newton_steps = static_int(newton_steps, "newton_steps", "laplace", minimum=0)
    guide = autoguide(model, observations, *model_args, family="mvn")
    if not isinstance(at, Mapping):
        raise ArgumentError(
            f"laplace: at must be an autoguide's params (with 'loc') or a dict of latent values, "
            f"got {type(at).__name__}")
    if set(at) == set(guide.latents):
        point = guide._unconstrain_values(at, "laplace: at")
    elif "loc" in at:
        point = jnp.asarray(at["loc"], guide.dtype)
        if point.shape != (guide.num_dims,):
            raise ArgumentError(
                f"laplace: at['loc'] has shape {point.shape}, expected ({guide.num_dims},): the unconstrained "
                f"coordinates of the latents {', '.join(guide.latents)} (params of an autoguide of this model)")
    else:
        raise ArgumentError(
            f"laplace: at must hold 'loc' (an autoguide's params) or every latent {sorted(guide.latents)} "
            f"by name, got {sorted(at)}")

    def negative(u):
        return -guide._log_joint(u)

    hessian = jax.hessian(negative)

    def newton(_, u):
        return u - jnp.linalg.solve(hessian(u), jax.grad(negative)(u))

    @jax.jit
    def mode_and_curvature(start):
        point = jax.lax.fori_loop(0, newton_steps, newton, start)
        precision = hessian(point)
        return point, precision, jnp.linalg.cholesky(precision)

    point, precision, chol = mode_and_curvature(point)
    positive_definite = jnp.all(jnp.isfinite(chol))
    message = (f"laplace: the Hessian of the negative log density of {guide.model.__name__}'s latents "
               f"({', '.join(guide.latents)}, unconstrained) is not positive definite at the point; "
               "it is not a local mode (fit a 'delta' autoguide or take newton_steps first)")
    try:
        known = bool(positive_definite)
    except jax.errors.ConcretizationTypeError:
        validation.check(positive_definite, message + "; eigenvalues {value}", value=jnp.linalg.eigvalsh(precision))
    else:
        if not known:
            raise ValidationError(f"{message}; eigenvalues {np.asarray(jnp.linalg.eigvalsh(precision))}")
    return guide, _covariance_params(point, chol)


@jax.jit
def _covariance_params(point: jax.Array, chol: jax.Array) -> dict:
    """``"mvn"`` params with mean ``point`` and covariance ``H⁻¹`` from ``H``'s Cholesky factor."""
    inverse_chol = solve_triangular(chol, jnp.eye(chol.shape[0], dtype=chol.dtype), lower=True)
    scale_tril = jnp.linalg.cholesky(inverse_chol.T @ inverse_chol)
    return {"loc": point, "log_scale": jnp.log(jnp.diag(scale_tril)), "tril": jnp.tril(scale_tril, -1)}

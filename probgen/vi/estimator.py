"""``expectation``: turn a stochastic program into unbiased value and gradient estimates.

An *expectation program* ``program(key, *args) -> scalar`` samples from generative
functions (``simulate``/``generate``/``update``) and evaluates densities (``assess``),
then returns a number ``f``. ``expectation(program).estimate(key, *args)`` returns a
*surrogate*: a scalar whose value is ``f`` (an unbiased estimate of ``E[f]``) and whose
``jax.grad`` is an unbiased estimate of ``grad E[f]``. Each sample site contributes the
gradient its strategy prescribes (Lew, Huot, Staton, Mansinghka, Becker et al.,
"Probabilistic Programming with Programmable Variational Inference", PLDI 2024):

* REPARAM / IMPLICIT / PATH — the value is drawn pathwise (``rsample``; Gamma, Beta and
  Dirichlet draws use JAX's implicit gradients); PATH also stops the parameters in the
  site's log density (sticking the landing, Roeder et al. 2017); handled in core.
* REINFORCE — the value is drawn without gradient and its log density ``log p(x; θ)`` is
  collected. Collection goes through ``trace.extras`` (summed by every combinator, so
  REINFORCE sites inside ``pg.scan`` cost one ``lax.scan``), and the surrogate is the
  DiCE / magic-box form ``f + (L - ⊥L)·⊥f - Σ_s (ℓ_s - ⊥ℓ_s)·⊥b_s`` where ``⊥`` stops
  gradients, ``L = Σ_s ℓ_s`` and ``b_s`` is an optional per-site ``baseline=`` option.
  Leave-one-out control variates over particles are written with :func:`vmap_program`
  (``return_score=True``) and :func:`add_score_term` (see ``pg.vi.vimco``).
* ENUM — exact: the whole (pure) program is re-run, vmapped, at every point of the
  product of the enumerated supports, and the results are summed with the differentiable
  probabilities of the enumerated values.
* MVD — measure-valued derivatives (couplings in ``probgen.distributions.mvd``): the
  program is re-run with one element of the site value replaced by a draw from the
  positive / negative part; the term ``(η - ⊥η)·⊥(c (f₊ - f₋))`` adds the gradient.

Re-executions reuse the same key, so every other site draws the same randomness (common
random numbers). A site is identified across re-executions by its full address and the
ordinal of the public GF call that made it.

Limits (errors name the address): ENUM and MVD sites cannot sit inside a combinator
(``pg.vmap``/``pg.scan``/``pg.switch``/``pg.mix``) or inside :func:`vmap_program`/``pg.vi.marginal``
— use REINFORCE there. A program that calls ``jax.vmap`` (or ``lax.scan``) itself over
``simulate`` calls with REINFORCE sites leaks batched values: use :func:`vmap_program`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from probgen.core import handlers
from probgen.core.choicemap import format_address
from probgen.core.errors import ProbgenError, StrategyError
from probgen.core.gfi import zero as _zero
from probgen.core.numerics import as_float
from probgen.distributions import mvd, protocol
from probgen.distributions.strategies import ENUM, MVD, REINFORCE

_LOGP = "vi_reinforce_logp"          # Σ log p(⊥x; θ) over REINFORCE sites
_BASELINE = "vi_reinforce_baseline"  # -Σ (ℓ - ⊥ℓ)·⊥b over sites with a baseline (value 0)
_MAX_ENUM = 1 << 14


class EstimatorError(ProbgenError, ValueError):
    """An expectation program cannot be turned into an estimator as written."""


class _NeedsDiscovery(Exception):
    """Raised by an optimistic single-pass run that meets an ENUM or MVD site."""


class _SiteInfo(NamedTuple):
    ident: tuple
    strategy: Any
    num_elements: int
    support_size: int                 # ENUM only
    terms: tuple                      # MVD only: ((param_size, group, has_minus), ...)


class _Collector(handlers.Interceptor):
    """Trace-time interceptor for one execution of an expectation program.

    ``mode`` is "discover" (record ENUM/MVD sites, static info only), "run" (the main
    or a re-execution) or "batched" (inside :func:`vmap_program`: ENUM/MVD are refused).
    """

    def __init__(self, mode: str, enum_index=None, perturb=None, mvd_numbers=None, optimistic=False):
        self.mode = mode
        self.trace_state = None          # JAX's trace state where the program started
        self.optimistic = optimistic
        self.enum_index = enum_index or {}
        self.perturb = perturb
        self.mvd_numbers = mvd_numbers or {}
        self.call_index = 0
        self.extras: list[dict] = []
        self.logp_terms: list = []       # REINFORCE log-probs added by vmap_program
        self.zero_terms: list = []       # value-zero surrogate terms (baselines, score terms)
        self.enum_logw = _zero()
        self.mvd_records: list = []      # (ident, terms) from the main run
        self.sites: list[_SiteInfo] = []

    # -- interceptor protocol ------------------------------------------------------
    def on_trace(self, trace) -> None:
        self.extras.append(dict(trace.extras))
        self.call_index += 1

    def draw(self, site: handlers.Site, key):
        if site.strategy is REINFORCE:
            value = protocol.draw(site.dist, key, False)
            log_p = protocol.log_density(site.dist, value)
            extras = {_LOGP: log_p}
            baseline = site.options.get("baseline")
            if baseline is not None:
                extras[_BASELINE] = -_score_term(log_p, as_float(baseline))
            return value, extras
        if site.strategy in (ENUM, MVD):
            return self._draw_exact(site, key)
        return None

    # -- ENUM / MVD -------------------------------------------------------------------
    def _draw_exact(self, site, key):
        where = format_address(site.address)
        if self.trace_state is not None and _trace_state() != self.trace_state:
            raise StrategyError(
                f"sample site {where!r} uses {site.strategy.value}, which re-executes the program at "
                "other values of the site, but the site is reached under a JAX transformation "
                "(jax.vmap, lax.scan, ...) inside the program, where one enumerated value would be "
                "shared by every batch member; use pg.REINFORCE there, batch with pg.vi.vmap_program "
                "(REINFORCE only) and sequences with pg.scan"
            )
        if site.combinators or self.mode == "batched":
            inside = "/".join(site.combinators) or "pg.vi.vmap_program / pg.vi.marginal / pg.vi.sir"
            raise StrategyError(
                f"sample site {where!r} uses {site.strategy.value}, which re-executes the program at "
                f"other values of the site, but the site is inside {inside}; use pg.REINFORCE "
                "there (or move the site out of the combinator)"
            )
        if self.optimistic:
            raise _NeedsDiscovery()
        ident = (self.call_index, site.address)
        dist = site.dist
        shape = protocol.value_shape(dist)
        num_elements = int(np.prod(dist.batch_shape, dtype=int))
        default = protocol.draw(dist, key, False)
        if self.mode == "discover":
            if site.strategy is ENUM:
                support = jax.eval_shape(lambda: dist.enumerate_support(True))
                self.sites.append(_SiteInfo(ident, ENUM, num_elements, support.shape[0], ()))
            else:
                terms = mvd.coupling_for(dist)(dist)
                spec = tuple((int(t.param.size), int(t.group), t.minus is not None) for t in terms)
                self.sites.append(_SiteInfo(ident, MVD, num_elements, 0, spec))
            return default, {}
        if site.strategy is ENUM:
            index = self.enum_index[ident]
            support = dist.enumerate_support(True)
            event = tuple(dist.event_shape)
            flat = support.reshape((support.shape[0], num_elements) + event)
            value = flat[index, jnp.arange(num_elements)].reshape(shape).astype(default.dtype)
            self.enum_logw = self.enum_logw + protocol.log_density(dist, value)
            return jax.lax.stop_gradient(value), {}
        terms = mvd.coupling_for(dist)(dist)
        self.mvd_records.append((ident, terms))
        value = default
        if self.perturb is not None:
            site_number, term_number, element, sign = self.perturb
            flat = default.reshape(-1)
            for t, term in enumerate(terms):
                parts = [(1, term.plus)] + ([(-1, term.minus)] if term.minus is not None else [])
                for s, sampler in parts:
                    draw = sampler(jax.random.fold_in(key, 2 * t + (s < 0) + 1)).reshape(-1)
                    moved = flat.at[element // term.group].set(draw[element].astype(flat.dtype))
                    active = (site_number == self.mvd_numbers[ident]) & (term_number == t) & (sign == s)
                    value = jnp.where(active, moved.reshape(shape), value)
        return jax.lax.stop_gradient(value), {}

    # -- totals -------------------------------------------------------------------------
    def totals(self):
        """(L, value-zero terms) summed over the traces and helpers of this execution."""
        try:
            logp = sum((e.get(_LOGP, _zero()) for e in self.extras), _zero())
            logp = logp + sum(self.logp_terms, _zero())
            zero = sum((e.get(_BASELINE, _zero()) for e in self.extras), _zero())
            zero = zero + sum(self.zero_terms, _zero())
            # Touch the values so that an escaped tracer fails here, with our message.
            logp, zero = logp + 0.0, zero + 0.0
        except jax.errors.UnexpectedTracerError as err:
            raise EstimatorError(
                "an expectation program made a trace inside jax.vmap or lax.scan and its gradient "
                "terms escaped the transformation; batch particles with pg.vi.vmap_program(fn, ...) instead "
                "of jax.vmap (and use pg.scan for sequences)"
            ) from err
        return logp, zero


class TermScope:
    """The gradient terms collected inside :func:`term_scope` (see there)."""

    def __init__(self):
        self._collector = _Collector("batched")

    def add_log_prob(self, log_prob: jax.Array) -> None:
        """Add the log-probability of a discrete decision made outside any sample site."""
        self._collector.logp_terms.append(log_prob)

    def terms(self) -> dict:
        """The collected terms, as a trace's ``extras`` (summed by every combinator)."""
        logp, zero = self._collector.totals()
        return {_LOGP: logp, _BASELINE: zero}


@contextlib.contextmanager
def term_scope() -> Iterator[TermScope]:
    """Collect the gradient terms of the GF calls made inside, for a GF built from them.

    A generative function whose ``_run`` calls other GFs (``pg.vi.marginal``,
    ``pg.vi.sir``) gathers their REINFORCE terms here and returns them as its own
    trace's ``extras``, so estimators see them like a primitive site's. ENUM and MVD sites
    are refused inside, as in :func:`vmap_program`.
    """
    scope = TermScope()
    with handlers.handle(scope._collector):
        yield scope


def _current_collector() -> _Collector | None:
    obj = handlers.interceptor()
    return obj if isinstance(obj, _Collector) else None


class _Run(NamedTuple):
    value: jax.Array
    logp: jax.Array
    zero: jax.Array
    enum_logw: jax.Array
    mvd_records: list


def _trace_state():
    return jax.extend.core.get_opaque_trace_state(convention="probgen")


def _execute(program, key, args, collector: _Collector) -> _Run:
    collector.trace_state = _trace_state()
    with handlers.handle(collector):
        value = program(key, *args)
    value = jnp.asarray(value)
    if value.shape != ():
        raise EstimatorError(
            f"an expectation program must return a scalar, got shape {value.shape}; "
            "reduce it (sum or mean) inside the program"
        )
    logp, zero = collector.totals()
    return _Run(as_float(value), logp, zero, collector.enum_logw, collector.mvd_records)


def _score_term(log_prob: jax.Array, learning_signal: jax.Array) -> jax.Array:
    """``Σ (ℓ - ⊥ℓ)·⊥signal``: value zero, gradient the score-function (REINFORCE) term."""
    return jnp.sum((log_prob - jax.lax.stop_gradient(log_prob)) * jax.lax.stop_gradient(learning_signal))


def _surrogate(run: _Run) -> jax.Array:
    return run.value + _score_term(run.logp, run.value) + run.zero


def _discover(program, key, args) -> list[_SiteInfo]:
    collector = _Collector("discover")
    jax.eval_shape(lambda k, a: _execute(program, k, a, collector).value, key, args)
    return collector.sites


def _enum_grid(sites: list[_SiteInfo]) -> dict:
    """Every joint assignment of the ENUM sites' elements, as index arrays (G, n)."""
    sizes = [s.support_size for s in sites for _ in range(s.num_elements)]
    total = math.prod(sizes)
    if total > _MAX_ENUM:
        names = ", ".join(repr(format_address(s.ident[1])) for s in sites)
        raise EstimatorError(
            f"enumerating {names} needs {total} joint assignments (more than {_MAX_ENUM}); "
            "use pg.MVD or pg.REINFORCE for some of these sites"
        )
    combos = np.array(list(itertools.product(*[range(k) for k in sizes])), dtype=np.int32).reshape(total, -1)
    grid, start = {}, 0
    for s in sites:
        grid[s.ident] = jnp.asarray(combos[:, start:start + s.num_elements])
        start += s.num_elements
    return grid


def _mvd_plan(sites: list[_SiteInfo]):
    """Static rows (site_number, term, element, sign) of every MVD re-execution."""
    rows = []
    for number, s in enumerate(sites):
        for t, (size, _group, has_minus) in enumerate(s.terms):
            for e in range(size):
                rows.append((number, t, e, 1))
                if has_minus:
                    rows.append((number, t, e, -1))
    return np.array(rows, dtype=np.int32).reshape(-1, 4)


class Expectation(NamedTuple):
    """An estimator of ``E[program(key, *args)]`` (built by :func:`expectation`).

    ``estimate(key, *args)`` (also ``self(key, *args)``) returns the surrogate: its value is
    an unbiased estimate of the expectation, its ``jax.grad`` an unbiased gradient estimate.
    """

    estimate: Callable[..., jax.Array]
    program: Callable[..., Any]

    def __call__(self, key, *args):
        return self.estimate(key, *args)


def expectation(program: Callable[..., Any]) -> Expectation:
    """Turn an expectation program into unbiased value and gradient estimators.

    Args:
      program: ``program(key, *args) -> scalar``; it may call ``simulate``, ``generate``,
        ``update`` and ``assess`` of generative functions and any JAX code. It must be
        pure (same key, same result): ENUM and MVD re-execute it.

    Returns:
      An :class:`Expectation` whose ``estimate(key, *args)`` is a scalar surrogate: its
      value is an unbiased estimate of ``E[program]`` and ``jax.grad(estimate, argnums=...)``
      an unbiased estimate of the gradient, following each site's strategy. It runs under
      ``jax.jit``, ``jax.vmap`` and inside ``lax.scan``.

    Example (a new objective in a notebook cell: the ELBO of a one-site model):
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def guide(mu):
        ...     return pg.sample("z", pg.Normal(mu, 1.0))
        >>> @pg.gen
        ... def model():
        ...     pg.sample("z", pg.Normal(0.0, 1.0))
        >>> def elbo(key, mu):
        ...     tr = guide.simulate(key, mu)
        ...     log_p, _ = model.assess(tr.choices)
        ...     return log_p - tr.score
        >>> est = pg.vi.expectation(elbo)
        >>> value, grad = jax.value_and_grad(est.estimate, argnums=1)(jax.random.key(0), 1.0)
        >>> value.shape, grad.shape
        ((), ())
    """

    def estimate(key, *args):
        # Most programs have no ENUM/MVD site: trace once, and fall back to discovery
        # plus re-execution only when such a site shows up.
        try:
            return _surrogate(_execute(program, key, args, _Collector("run", optimistic=True)))
        except _NeedsDiscovery:
            pass
        sites = _discover(program, key, args)
        enum_sites = [s for s in sites if s.strategy is ENUM]
        mvd_sites = [s for s in sites if s.strategy is MVD]
        numbers = {s.ident: n for n, s in enumerate(mvd_sites)}
        plan = _mvd_plan(mvd_sites) if mvd_sites else None

        def at_grid_point(enum_index):
            run = _execute(program, key, args, _Collector("run", enum_index, None, numbers))
            surrogate = _surrogate(run)
            if plan is not None:
                def perturbed(row):
                    collector = _Collector("run", enum_index, tuple(row), numbers)
                    return _execute(program, key, args, collector).value

                values = jax.lax.stop_gradient(jax.vmap(perturbed)(jnp.asarray(plan)))
                records = dict((ident, terms) for ident, terms in run.mvd_records)
                for number, site in enumerate(mvd_sites):
                    for t, term in enumerate(records[site.ident]):
                        mask = (plan[:, 0] == number) & (plan[:, 1] == t)
                        plus = values[np.nonzero(mask & (plan[:, 3] == 1))[0]]
                        minus = values[np.nonzero(mask & (plan[:, 3] == -1))[0]] if term.minus is not None else 0.0
                        eta = term.param.reshape(-1)
                        signal = jax.lax.stop_gradient(term.weight.reshape(-1) * (plus - minus))
                        # An outcome of probability zero can make f infinite there (log 0);
                        # the parameter sits on its boundary and moves nothing: no term
                        # (rather than 0 * inf = NaN in the value and the gradient).
                        signal = jnp.where(jnp.isfinite(signal), signal, 0.0)
                        surrogate = surrogate + _score_term(eta, signal)
            return surrogate, run.enum_logw

        if not enum_sites:
            return at_grid_point({})[0]
        grid = _enum_grid(enum_sites)
        surrogates, log_weights = jax.vmap(at_grid_point)(grid)
        # Assignments of probability zero contribute nothing (not 0 * inf = NaN); the
        # double where keeps their NaN out of the gradient too.
        possible = log_weights > -jnp.inf
        safe_log_w = jnp.where(possible, log_weights, 0.0)
        safe_surrogates = jnp.where(possible, surrogates, 0.0)
        return jnp.sum(jnp.where(possible, jnp.exp(safe_log_w) * safe_surrogates, 0.0))

    return Expectation(estimate, program)


def vmap_program(fn: Callable, in_axes: Any = 0, axis_size: int | None = None, return_score: bool = False) -> Callable:
    """``jax.vmap`` for expectation programs: batch particles without leaking gradient terms.

    Each batch member runs in its own collection scope; the REINFORCE log-probs it
    collects come out as a per-member vector. By default they are handed to the
    enclosing :func:`expectation` (all particles share the program's learning signal);
    with ``return_score=True`` they are returned instead, ``(out, log_probs)``, for a
    custom control variate via :func:`add_score_term` (e.g. VIMCO's leave-one-out).

    Args:
      fn: the per-member function (may call GF methods).
      in_axes, axis_size: as for ``jax.vmap``.
      return_score: return the per-member REINFORCE log-probs instead of collecting them.

    Returns:
      The batched function.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def guide():
        ...     return pg.sample("z", pg.Normal(0.0, 1.0))
        >>> def program(key):
        ...     traces = pg.vi.vmap_program(guide.simulate)(jax.random.split(key, 4))
        ...     return traces.score.mean()
        >>> pg.vi.expectation(program).estimate(jax.random.key(0)).shape
        ()
    """

    def batched(*args):
        def one(*member_args):
            collector = _Collector("batched")
            with handlers.handle(collector):
                out = fn(*member_args)
            logp, zero = collector.totals()
            return out, logp, zero

        out, logp, zero = jax.vmap(one, in_axes=in_axes, axis_size=axis_size)(*args)
        outer = _current_collector()
        if outer is not None:
            outer.zero_terms.append(jnp.sum(zero))
            if not return_score:
                outer.logp_terms.append(jnp.sum(logp))
        return (out, logp) if return_score else out

    return batched


def add_score_term(log_prob: jax.Array, learning_signal: jax.Array) -> None:
    """Add a score-function term ``Σ (log_prob - ⊥log_prob) · ⊥learning_signal`` (value 0).

    For custom control variates: with the per-particle log-probs from
    ``pg.vi.vmap_program(..., return_score=True)`` and a per-particle learning signal (e.g. the
    objective minus a leave-one-out baseline), this adds their REINFORCE gradient to the
    enclosing expectation without changing its value.

    Args:
      log_prob: log densities of the (stop-gradient) draws, any shape.
      learning_signal: same shape; gradients are stopped.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> def program(key, theta):
        ...     pg.vi.add_score_term(jnp.log(theta), jnp.asarray(2.0))
        ...     return jnp.asarray(0.0)
        >>> float(jax.grad(pg.vi.expectation(program).estimate, argnums=1)(jax.random.key(0), 1.0))
        2.0
    """
    collector = _current_collector()
    if collector is None:
        raise EstimatorError("add_score_term must be called inside a program run by pg.vi.expectation")
    log_prob = as_float(log_prob)
    learning_signal = jnp.broadcast_to(as_float(learning_signal), log_prob.shape)
    collector.zero_terms.append(_score_term(log_prob, learning_signal))

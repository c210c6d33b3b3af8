"""``@pg.gen`` and ``pg.sample``: the modeling language's interpreter.

A ``@pg.gen`` function is ordinary Python/JAX code. While JAX traces one of its
methods, a handler sits on a (trace-time) stack; each ``pg.sample`` asks the handler
for a value. The handler draws, reads a constraint, or recurses into a nested
generative function, and adds log densities up. Nothing of this machinery is left in
the compiled program: a model costs what the same code written by hand costs.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from probgen.core import handlers, validation
from probgen.core.choicemap import ChoiceMap, format_address, normalize_address
from probgen.core.errors import AddressError, ArgumentError, ConstraintError, MissingChoiceError, StrategyError
from probgen.core.gfi import GenerativeFunction, Mode, add_extras, zero
from probgen.core.keys import is_particle_key, stream_key, threefry_key
from probgen.core.trace import Trace
from probgen.distributions import protocol
from probgen.distributions.strategies import PATH

def sample(address, target, *args, strategy=None):
    """Make a named random choice inside a ``@pg.gen`` function.

    Args:
      address: a string, or a tuple of strings for a hierarchical address.
      target: a distribution (numpyro, distrax or ``pg.Distribution``) or a
        generative function, whose choices then nest under ``address``.
      *args: arguments of ``target`` when it is a generative function.
      strategy: the gradient strategy for this site (``pg.REPARAM``,
        ``pg.REINFORCE``, ``pg.ENUM``, ``pg.MVD``, ``pg.IMPLICIT``, ``pg.PATH``);
        defaults to the distribution's.

    Returns:
      The value of the choice, or the return value of the nested function.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model(mu):
        ...     z = pg.sample("z", pg.Normal(mu, 1.0))
        ...     return pg.sample("x", pg.Normal(z, 0.5))
        >>> tr = model.simulate(jax.random.key(0), 0.0)
        >>> sorted(tr.choices.addresses())
        [('x',), ('z',)]
    """
    handler = handlers.innermost(_Handler)
    if handler is None:
        raise RuntimeError(
            f"pg.sample({address!r}, ...) was called outside a generative function: decorate "
            "the function with @pg.gen and run it with simulate / generate / assess / update"
        )
    path = normalize_address(address)
    return handler.visit(path, target, args, strategy)


class _Handler:
    """Interprets the sample sites of one execution of a ``@pg.gen`` body (a handler on the stack)."""

    def __init__(self, gf_name: str, key, constraints: ChoiceMap, mode: Mode):
        self.gf_name = gf_name
        self.key = stream_key(key)  # the same draws as ``key``, hashed by probgen's unrolled threefry
        self.constraints = constraints
        self.mode = mode
        self.entries: dict[tuple[str, ...], Any] = {}
        self.score = zero()
        self.weight = zero()
        self.extras: dict = {}
        self.site_scores: dict[tuple[str, ...], Any] = {}
        self.counter = 0

    def _next_key(self):
        self.counter += 1
        if self.key is None:
            return None
        return jax.random.fold_in(self.key, self.counter)

    def _claim(self, path: tuple[str, ...]) -> None:
        where = format_address(handlers.full_address(path))
        for existing in self.entries:
            if existing == path:
                raise AddressError(
                    f"address {where!r} is visited twice in one execution of {self.gf_name}; "
                    "each random choice needs its own address (inside a loop, use the scan "
                    "or vmap combinator, or put the index in the address)"
                )
            shorter, longer = sorted((existing, path), key=len)
            if longer[: len(shorter)] == shorter:
                raise AddressError(
                    f"address {where!r} of {self.gf_name} overlaps {format_address(existing)!r}: "
                    "an address cannot hold a value and also be the prefix of other choices"
                )

    def _constraint(self, path: tuple[str, ...]):
        try:
            return self.constraints[path]
        except KeyError:
            return None

    def visit(self, path, target, args, strategy):
        self._claim(path)
        key = self._next_key()
        if isinstance(target, GenerativeFunction):
            if strategy is not None:
                raise StrategyError(
                    f"strategy= applies to distributions, not to the generative function at "
                    f"{format_address(handlers.full_address(path))!r}; set strategies on its own sites"
                )
            return self._visit_gf(path, target, args, key)
        if protocol.is_distribution(target):
            if args:
                raise ArgumentError(
                    f"pg.sample at {format_address(path)!r}: extra arguments are only for "
                    "generative functions, not distributions"
                )
            return self._visit_dist(path, target, strategy, key)
        raise ArgumentError(
            f"pg.sample at {format_address(handlers.full_address(path))!r} got a "
            f"{type(target).__name__}; expected a distribution (numpyro, distrax, pg.Distribution) "
            "or a generative function"
        )

    def _visit_gf(self, path, gf: GenerativeFunction, args, key):
        sub = self._constraint(path)
        if sub is not None and not isinstance(sub, ChoiceMap):
            raise ConstraintError(
                f"address {format_address(handlers.full_address(path))!r} is a call to "
                f"{gf.__name__}, but the constraints hold a single value there; give a choice map "
                "of its inner addresses"
            )
        from probgen.core.gfi import check_args

        check_args(gf, args)
        with handlers.handle(handlers.AddressScope(path)):
            trace, weight = gf._run(key, sub if sub is not None else ChoiceMap(), args, self.mode)
        self.entries[path] = trace.choices
        # A callee whose score does not split by site is one unit at its address.
        self.site_scores[path] = trace.site_scores if trace.site_scores is not None else trace.score
        self.score = self.score + trace.score
        self.weight = self.weight + weight
        self.extras = add_extras(self.extras, trace.extras)
        return trace.retval

    def _visit_dist(self, path, dist_like, strategy, key):
        dist, attached, options = protocol.unwrap(dist_like)
        strategy = protocol.Strategy(strategy) if strategy is not None else attached
        strategy = strategy or protocol.default_strategy(dist)
        full = handlers.full_address(path)
        reason = protocol.strategy_error(dist, strategy)
        if reason is not None:
            raise StrategyError(f"sample site {format_address(full)!r}: {reason}")
        expected = protocol.value_shape(dist)
        value = self._constraint(path)
        if isinstance(value, ChoiceMap):
            raise ConstraintError(
                f"address {format_address(full)!r} is a primitive sample site, but the constraints "
                "hold a choice map there"
            )
        space = handlers.unconstrained_site(full) if value is not None else None
        bijection = _bijection(full, dist) if space is not None else None
        if value is not None:
            value = jnp.asarray(value)
            if bijection is not None and not space.inverse:
                expected = tuple(bijection.inverse_shape(expected))
            if tuple(value.shape) != expected:
                what = "unconstrained coordinates" if bijection is not None and not space.inverse else "values"
                raise ConstraintError(
                    f"constraint at {format_address(full)!r} has shape {tuple(value.shape)}, but its "
                    f"distribution {type(dist).__name__} takes {what} of shape {expected}"
                    + ("" if bijection is not None else " (batch_shape + event_shape)")
                )
        elif self.mode is Mode.ASSESS:
            raise MissingChoiceError(
                f"assess of {self.gf_name}: no value for sample site {format_address(full)!r}; "
                "assess needs every choice (use generate to draw the missing ones)"
            )
        if handlers.is_validating():
            # Unconstrained coordinates are checked once mapped (always inside the support);
            # a placeholder (a masked observation, a switch branch not taken) is absent.
            checked = None if bijection is not None and not space.inverse else value
            may_be_absent = checked is not None and self.mode is not Mode.ASSESS and handlers.in_placeholder_scope()
            _check_distribution(full, dist, checked, _is_placeholder(checked) if may_be_absent else None)
        # PATH (sticking the landing) stops the parameters in the log density of a value
        # the site *draws*; a given value keeps its full gradient (assess, generate, update).
        drawn_dist = jax.tree.map(jax.lax.stop_gradient, dist) if strategy is PATH else dist
        extras: dict = {}
        recorded = None  # what the trace holds, when it differs from what the program computes with
        if value is None:
            value, extras = self._draw(full, dist, strategy, options, key)
            log_p = protocol.log_density(drawn_dist, value)
        elif self.mode is not Mode.ASSESS and handlers.in_placeholder_scope():
            # A placeholder (left by a switch branch not taken, or a padded scan step)
            # counts as absent: draw fresh and add no weight.
            absent = _is_placeholder(value)
            fresh, extras = self._draw(full, dist, strategy, options, key)
            extras = jax.tree.map(lambda e: jnp.where(absent, e, jnp.zeros_like(e)), extras)
            value = jnp.where(absent, fresh, value)
            given_log_p = protocol.log_density(dist, value)
            log_p = jnp.where(absent, protocol.log_density(drawn_dist, value), given_log_p)
            self.weight = self.weight + jnp.where(absent, jnp.zeros_like(given_log_p), given_log_p)
        elif bijection is not None:
            log_p, recorded = _unconstrained_density(dist, bijection, value, space.inverse)
            self.weight = self.weight + log_p
            # The program always computes with the site's own (constrained) value: the inverse
            # mode records T^{-1}(x) but hands x on, so later supports use the right bounds.
            if not space.inverse:
                value = recorded
        else:
            log_p = protocol.log_density(dist, value)
            self.weight = self.weight + log_p
        self.entries[path] = value if recorded is None else recorded
        # Per batch element under handlers.PointwiseScores (pg.mc.predictive's pointwise
        # log-likelihood); the density of the site's value, without a change of variables.
        self.site_scores[path] = jnp.asarray(dist.log_prob(value)) if handlers.pointwise_scores() else log_p
        self.score = self.score + log_p
        self.extras = add_extras(self.extras, extras)
        return value

    def _draw(self, full, dist, strategy, options, key):
        try:
            return self._draw_with(full, dist, strategy, options, key)
        except NotImplementedError as err:
            # jax.random.poisson accepts threefry keys only: give the site the plain threefry
            # key its stream stands for (the same key for index 0, so the same draws).
            if "threefry2x32" not in str(err) or not is_particle_key(key):
                raise
            return self._draw_with(full, dist, strategy, options, threefry_key(key))

    def _draw_with(self, full, dist, strategy, options, key):
        interceptor = handlers.interceptor()
        if interceptor is not None:
            site = handlers.Site(full, dist, strategy, options, handlers.combinators())
            result = interceptor.draw(site, key)
            if result is not None:
                return result
        return protocol.draw(dist, key, protocol.is_pathwise(strategy)), {}

    def choices(self) -> ChoiceMap:
        return ChoiceMap(self.entries)


def placeholder_like(value: jax.Array) -> jax.Array:
    """The value a switch stores at addresses of branches not taken."""
    value = jnp.asarray(value)
    if jnp.issubdtype(value.dtype, jnp.floating):
        return jnp.full_like(value, jnp.nan)
    if jnp.issubdtype(value.dtype, jnp.integer):
        return jnp.full_like(value, jnp.iinfo(value.dtype).min)
    return jnp.zeros_like(value)


def _is_placeholder(value: jax.Array, batch_ndim: int = 0) -> jax.Array:
    """Whether ``value`` is a placeholder (all NaN / the integer minimum), per leading element.

    With ``batch_ndim = k`` the answer has the first ``k`` axes of ``value`` (one flag per
    element of a ``vmap``/``scan`` axis); the remaining axes are reduced.
    """
    value = jnp.asarray(value)
    if jnp.issubdtype(value.dtype, jnp.floating):
        flags = jnp.isnan(value)
    elif jnp.issubdtype(value.dtype, jnp.integer):
        flags = value == jnp.iinfo(value.dtype).min
    else:
        return jnp.zeros(value.shape[:batch_ndim], bool)
    return jnp.all(flags, axis=tuple(range(batch_ndim, value.ndim)))


class GenFn(GenerativeFunction):
    """A generative function defined by a Python function with ``pg.sample`` sites."""

    def __init__(self, fn: Callable):
        self.fn = fn
        functools.update_wrapper(self, fn)
        self.__name__ = getattr(fn, "__name__", "gen_fn")

    def _run(self, key, constraints, args, mode):
        handler = _Handler(self.__name__, key, constraints, mode)
        with handlers.handle(handler):
            retval = self.fn(*args)
        trace = Trace(self, args, retval, handler.choices(), handler.score, handler.extras,
                      ChoiceMap(handler.site_scores))
        return trace, handler.weight

    def __call__(self, *args):
        raise ArgumentError(
            f"{self.__name__} is a generative function: call it at an address inside another one "
            f"(pg.sample('name', {self.__name__}, *args)) or run {self.__name__}.simulate(key, *args)"
        )


def gen(fn: Callable) -> GenFn:
    """Turn a Python/JAX function with ``pg.sample`` sites into a generative function.

    The result has ``simulate``, ``assess``, ``generate`` and ``update``, all pure and
    usable under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def normal_normal(mu0):
        ...     z = pg.sample("z", pg.Normal(mu0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        ...     return z
        >>> log_p, _ = jax.jit(normal_normal.assess)({"z": 0.0, "x": 0.0}, 0.0)
        >>> round(float(log_p), 4)
        -1.8379
    """
    return GenFn(fn)


def _bijection(full, dist):
    """``biject_to`` of the site's support: the map from the real line onto it."""
    from numpyro.distributions.transforms import biject_to

    support = protocol.support(dist)
    if support is None:
        raise ArgumentError(
            f"sample site {format_address(full)!r}: {type(dist).__name__} declares no support, so it "
            "cannot be moved in unconstrained coordinates; set its `support` to a "
            "numpyro.distributions.constraints constraint"
        )
    if support.is_discrete:
        raise ArgumentError(
            f"sample site {format_address(full)!r} is discrete ({type(dist).__name__}, support "
            f"{support}); gradient-based moves need continuous latents (observe it, or move it with "
            "pg.mc.regenerate)"
        )
    try:
        return biject_to(support)
    except NotImplementedError:
        raise ArgumentError(
            f"sample site {format_address(full)!r}: no bijection onto the support {support} of "
            f"{type(dist).__name__} is known (a support that depends on other choices?)"
        ) from None


def _unconstrained_density(dist, bijection, value, inverse: bool):
    """``(log_p, recorded value)`` of a site given in the other coordinate system.

    Forward: ``value`` is ``u``; the site holds ``x = T(u)`` with density
    ``p(x) |det dT/du|``. Inverse: ``value`` is ``x``; the trace records ``T^{-1}(x)``.
    """
    if inverse:
        return protocol.log_density(dist, value), bijection.inv(value)
    x = bijection(value)
    log_det = jnp.sum(bijection.log_abs_det_jacobian(value, x))
    return protocol.log_density(dist, x) + log_det, x


def _check_distribution(full, dist, value, absent=None) -> None:
    """Validation mode: the site's parameters satisfy their constraints; a given value is in the
    support (or ``absent``: a placeholder)."""
    where = format_address(full)
    name = type(dist).__name__
    for param, constraint in (getattr(dist, "arg_constraints", None) or {}).items():
        if param not in vars(dist) and not hasattr(type(dist), param):
            continue
        try:
            array = getattr(dist, param)
            ok = constraint.check(array)
        except Exception:  # a constraint numpyro cannot check on this parameter
            continue
        validation.check(
            ok, f"sample site {where!r}: {name} parameter {param!r} is out of its constraint "
            f"({_constraint_name(constraint)}), got {{value}}", value=jnp.asarray(array)
        )
    support = getattr(dist, "support", None)
    if value is not None and support is not None and hasattr(support, "check"):
        inside = support.check(value)
        validation.check(
            inside if absent is None else jnp.all(inside) | absent,
            f"sample site {where!r}: value {{value}} is outside the support "
            f"of {name} ({_constraint_name(support)})", value=value
        )


def _constraint_name(constraint) -> str:
    return type(constraint).__name__.lstrip("_").replace("Interval", "interval").lower()

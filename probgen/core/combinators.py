"""Combinators: generative functions built from generative functions.

``vmap`` (plates), ``repeat`` (i.i.d. copies), ``scan`` (state-space models, one
``lax.scan``: compile time does not grow with the length), ``switch`` (a traced branch
index) and ``mix`` (mixtures). Each is a full generative function, so they nest in any
order. Their choices carry a leading axis (vmap, repeat, scan) or are the union of
their branches' choices (switch).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.extend.core import ClosedJaxpr, Jaxpr, Var, jaxpr_as_fun

from probgen.core import handlers, validation
from probgen.core.checks import static_int
from probgen.core.choicemap import ChoiceMap, format_address
from probgen.core.errors import ArgumentError, ConstraintError, SettingError
from probgen.core.gen import _is_placeholder, gen, placeholder_like, sample
from probgen.core.gfi import GenerativeFunction, Mode, check_args
from probgen.core.trace import Trace
from probgen.distributions import Categorical
from probgen.core.keys import particle_keys


def _split(key, n: int):
    return None if key is None else jax.random.split(key, n)


def _member_keys(key, n: int):
    """One key per member of a vmapped combinator (a particle key each: see ``pg.particle_keys``)."""
    return None if key is None else particle_keys(key, n)


def _check_leading_axis(name: str, constraints: ChoiceMap, size: int) -> None:
    for address, value in constraints.to_dict().items():
        shape = jnp.shape(value)
        if not shape or shape[0] != size:
            full = format_address(handlers.full_address(address))
            raise ConstraintError(
                f"constraint at {full!r} under the {name} combinator needs a leading axis of "
                f"size {size} (one value per element), got shape {tuple(shape)}"
            )


def _fit_previous(constraints: ChoiceMap, length: int) -> tuple[ChoiceMap, bool]:
    """``update`` with a new sequence length: cut or pad the old trace's values (not constraints).

    Old values of steps past the new length are dropped; steps the old trace did not have
    get placeholders, so they are drawn fresh. Hard constraints must match the length.
    """
    fitted, padded = {}, False
    for address, value in constraints.to_dict().items():
        shape = jnp.shape(value)
        if shape and shape[0] != length and not handlers.is_constraint(address):
            if shape[0] > length:
                value = value[:length]
            else:
                pad = placeholder_like(jnp.zeros((length - shape[0],) + shape[1:], jnp.asarray(value).dtype))
                value = jnp.concatenate([value, pad])
                padded = True
        fitted[address] = value
    return ChoiceMap(fitted), padded


def _sum_extras(extras: dict) -> dict:
    return {k: jnp.sum(v) for k, v in extras.items()}


class VMap(GenerativeFunction):
    """A plate: the inner GF mapped over an axis of its arguments (see :func:`vmap`)."""

    def __init__(self, gf: GenerativeFunction, in_axes: Any = 0, axis_size: int | None = None):
        self.gf = gf
        self.in_axes = in_axes
        self.axis_size = axis_size
        self.__name__ = f"vmap({gf.__name__})"

    def _size(self, args) -> int:
        if self.axis_size is not None:
            return self.axis_size
        in_axes = self.in_axes if isinstance(self.in_axes, tuple) else (self.in_axes,) * len(args)
        if len(in_axes) != len(args):
            raise SettingError(
                f"{self.__name__}: in_axes has {len(in_axes)} entries for {len(args)} arguments"
            )
        sizes = set()
        for arg, axis in zip(args, in_axes):
            if axis is None:
                continue
            for leaf in jax.tree.leaves(arg):
                sizes.add(jnp.shape(leaf)[axis])
        if not sizes:
            raise SettingError(f"{self.__name__}: no argument is mapped (all in_axes are None); use repeat(gf, n)")
        if len(sizes) > 1:
            raise ConstraintError(f"{self.__name__}: mapped arguments disagree on the axis size: {sorted(sizes)}")
        return sizes.pop()

    def _run(self, key, constraints, args, mode):
        size = self._size(args)
        _check_leading_axis(self.__name__, constraints, size)
        in_axes = self.in_axes if isinstance(self.in_axes, tuple) else (self.in_axes,) * len(args)

        def one(k, c, a):
            trace, weight = self.gf._run(k, c, a, mode)
            return trace.choices, trace.retval, trace.score, trace.extras, trace.site_scores, weight

        with handlers.handle(handlers.CombinatorScope("vmap")):
            choices, retval, scores, extras, site_scores, weights = jax.vmap(
                one, in_axes=(None if key is None else 0, 0, in_axes), axis_size=size
            )(_member_keys(key, size), constraints, args)
        trace = Trace(self, args, retval, choices, jnp.sum(scores), _sum_extras(extras), site_scores)
        return trace, jnp.sum(weights)


def vmap(gf: GenerativeFunction, in_axes: Any = 0) -> VMap:
    """Map a generative function over an axis of its arguments (a plate).

    Choices get a leading axis; the score is the sum over elements.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def point(mu):
        ...     return pg.sample("x", pg.Normal(mu, 1.0))
        >>> tr = pg.vmap(point).simulate(jax.random.key(0), jnp.arange(3.0))
        >>> tr["x"].shape
        (3,)
    """
    return VMap(gf, in_axes)


def repeat(gf: GenerativeFunction, num_repeats: int) -> VMap:
    """``num_repeats`` independent copies of ``gf`` with the same arguments.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def flip():
        ...     return pg.sample("b", pg.Bernoulli(probs=0.5))
        >>> pg.repeat(flip, 4).simulate(jax.random.key(0))["b"].shape
        (4,)
    """
    num_repeats = static_int(num_repeats, "num_repeats", "repeat")
    out = VMap(gf, None, axis_size=num_repeats)
    out.__name__ = f"repeat({gf.__name__}, {num_repeats})"
    return out


class Scan(GenerativeFunction):
    """A state-space model: ``kernel(carry, x) -> (carry, y)`` run with ``lax.scan``."""

    def __init__(self, kernel: GenerativeFunction, length: int | None = None):
        self.kernel = kernel
        self.length = length
        self.__name__ = f"scan({kernel.__name__})"

    def _length(self, xs) -> int:
        leaves = jax.tree.leaves(xs)
        if leaves:
            sizes = {jnp.shape(leaf)[0] for leaf in leaves}
            if len(sizes) > 1:
                raise ConstraintError(f"{self.__name__}: xs leaves disagree on their leading axis: {sorted(sizes)}")
            size = sizes.pop()
            if self.length is not None and self.length != size:
                raise ConstraintError(f"{self.__name__}: length={self.length} but xs has {size} steps")
            return size
        if self.length is None:
            raise SettingError(f"{self.__name__}: give xs or a length")
        return self.length

    def _run(self, key, constraints, args, mode):
        if len(args) != 2:
            raise ArgumentError(f"{self.__name__} takes (init_carry, xs), got {len(args)} arguments")
        init, xs = args
        length = self._length(xs)
        constraints, padded = _fit_previous(constraints, length)
        _check_leading_axis(self.__name__, constraints, length)

        def body(carry, step_inputs):
            k, c, x = step_inputs
            if padded:
                with handlers.placeholder_scope():
                    trace, weight = self.kernel._run(k, c, (carry, x), mode)
            else:
                trace, weight = self.kernel._run(k, c, (carry, x), mode)
            out = trace.retval
            if not (isinstance(out, tuple) and len(out) == 2):
                raise ArgumentError(
                    f"the kernel of {self.__name__} must return a (carry, output) pair, got "
                    f"{type(out).__name__}"
                )
            new_carry, y = out
            return new_carry, (trace.choices, y, trace.score, trace.extras, trace.site_scores, weight)

        inputs = (_split(key, length), constraints, xs)
        with handlers.handle(handlers.CombinatorScope("scan")):
            init, step, new_carry_of, carry_free, step_bytes = _traced_step(body, init, inputs)
            if carry_free and not padded and step_bytes * length <= PARALLEL_SCAN_BYTES:
                final, (choices, ys, scores, extras, site_scores, weights) = _parallel_scan(
                    step, new_carry_of, init, inputs)
            else:
                final, (choices, ys, scores, extras, site_scores, weights) = jax.lax.scan(
                    step, init, inputs, length=length
                )
        trace = Trace(self, args, (final, ys), choices, jnp.sum(scores), _sum_extras(extras), site_scores)
        return trace, jnp.sum(weights)


# A scan whose steps do not depend on each other runs as one vmap over the steps when the
# step's intermediate values, times the length, stay under this many bytes.
PARALLEL_SCAN_BYTES = 64 * 2**20


def _traced_step(body, init, inputs):
    """The scan body traced once: ``(init, step, new_carry_of, carry_free, step_bytes)``.

    ``step`` evaluates the traced body (the interpreter runs once, however the step is then
    batched or scanned); ``new_carry_of`` computes only its new carry. ``carry_free``: the new carry does not depend on the carry the step
    gets, decided by following where the input carry flows in the step's jaxpr (through
    nested calls conservatively). Then the steps can run side by side: ``assess`` of a
    state-space model (the carry is a choice the trace holds) or ``generate`` with every
    latent given. ``step_bytes``: the size of the step's intermediate values.
    """
    first = jax.tree.map(lambda leaf: leaf[0], inputs)
    closed, shapes = jax.make_jaxpr(body, return_shape=True)(init, first)
    # As lax.scan does: a weakly typed initial carry (a Python 0.0) takes the type of the new carry.
    promoted = jax.tree.map(
        lambda i, o: jnp.asarray(i, o.dtype) if _weak(i) and jnp.result_type(i) != o.dtype else i, init, shapes[0])
    if any(p is not i for p, i in zip(jax.tree.leaves(promoted), jax.tree.leaves(init))):
        init = promoted
        closed, shapes = jax.make_jaxpr(body, return_shape=True)(init, first)
    out_tree = jax.tree.structure(shapes)
    evaluate = jaxpr_as_fun(closed)

    def step(carry, x):
        return jax.tree.unflatten(out_tree, evaluate(*jax.tree.leaves((carry, x))))

    jaxpr = closed.jaxpr
    num_carry = len(jax.tree.leaves(shapes[0]))
    # The new carry alone, for the parallel path's first pass (often just choices it reads).
    needed = {v for v in jaxpr.outvars[:num_carry] if isinstance(v, Var)}
    kept = []
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars):
            kept.append(eqn)
            needed.update(v for v in eqn.invars if isinstance(v, Var))
    carry_jaxpr = Jaxpr(jaxpr.constvars, jaxpr.invars, jaxpr.outvars[:num_carry], kept[::-1])
    evaluate_carry = jaxpr_as_fun(ClosedJaxpr(carry_jaxpr, closed.consts))

    def new_carry_of(carry, x):
        return jax.tree.unflatten(jax.tree.structure(shapes[0]), evaluate_carry(*jax.tree.leaves((carry, x))))

    tainted = set(jaxpr.invars[: len(jax.tree.leaves(init))])
    step_bytes = 0
    for eqn in jaxpr.eqns:
        if any(isinstance(v, Var) and v in tainted for v in eqn.invars):
            tainted.update(eqn.outvars)
        step_bytes += sum(v.aval.size * v.aval.dtype.itemsize for v in eqn.outvars if hasattr(v.aval, "size"))
    carry_free = not any(isinstance(v, Var) and v in tainted for v in jaxpr.outvars[:num_carry])
    return init, step, new_carry_of, carry_free, step_bytes


def _weak(value) -> bool:
    return isinstance(value, (bool, int, float, complex)) or bool(getattr(value, "weak_type", False))


def _parallel_scan(step, new_carry_of, init, inputs):
    """``lax.scan(step, init, inputs)`` for a step whose new carry ignores its carry: the
    carries first (each step from ``init``), then every step from the previous carry, as vmaps."""
    carries = jax.vmap(lambda s: new_carry_of(init, s))(inputs)
    previous = jax.tree.map(lambda c, i: jnp.concatenate([jnp.asarray(i, c.dtype)[None], c[:-1]]), carries, init)
    _, outputs = jax.vmap(step)(previous, inputs)
    return jax.tree.map(lambda c: c[-1], carries), outputs


def scan(kernel: GenerativeFunction, length: int | None = None) -> Scan:
    """A generative function over sequences: ``lax.scan`` of a kernel GF.

    The kernel takes ``(carry, x)`` and returns ``(carry, y)``; the scan takes
    ``(init_carry, xs)`` and returns ``(final_carry, ys)``. Choices get a leading time
    axis. One ``lax.scan``: a 1,000-step model compiles like a 10-step one. When the
    kernel's new carry does not depend on the carry it gets (``assess`` of a state-space
    model, or ``generate`` with every latent given: the carry is then a choice the trace
    holds), the steps run side by side as one ``vmap`` instead, with the same results; a
    step whose intermediate values times the length exceed ``PARALLEL_SCAN_BYTES`` (64 MiB)
    stays sequential.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def step(z, _):
        ...     z = pg.sample("z", pg.Normal(0.9 * z, 1.0))
        ...     pg.sample("y", pg.Normal(z, 0.5))
        ...     return z, None
        >>> tr = pg.scan(step, length=100).simulate(jax.random.key(0), 0.0, None)
        >>> tr["z"].shape
        (100,)
    """
    return Scan(kernel, length)


class Switch(GenerativeFunction):
    """Branching on a traced index: ``(index, *args)`` runs ``branches[index](*args)``."""

    def __init__(self, branches: Sequence[GenerativeFunction]):
        if not branches:
            raise SettingError("switch needs at least one branch")
        self.branches = tuple(branches)
        self.__name__ = f"switch({', '.join(b.__name__ for b in self.branches)})"

    def _probe(self, key, constraints, args, mode) -> list[Trace]:
        """Shapes of every branch's trace (static), each branch run on the same inputs."""
        return [
            jax.eval_shape(lambda k, c, a, b=branch: b._run(k, c, a, mode)[0], key, constraints, args)
            for branch in self.branches
        ]

    def _union(self, probes: list[Trace], field: str) -> dict:
        """Address -> ShapeDtypeStruct over every branch's ``choices`` or ``site_scores``."""
        layout: dict = {}
        for probe in probes:
            tree = getattr(probe, field)
            if tree is None:
                continue
            for address, spec in tree.to_dict().items():
                if address in layout and (layout[address].shape, layout[address].dtype) != (spec.shape, spec.dtype):
                    raise ConstraintError(
                        f"{self.__name__}: branches disagree on the shape of address "
                        f"{format_address(handlers.full_address(address))!r}: "
                        f"{layout[address].shape} vs {spec.shape}"
                    )
                layout[address] = spec
        return layout

    def _run(self, key, constraints, args, mode):
        if not args:
            raise ArgumentError(f"{self.__name__} takes (index, *branch_args)")
        index, branch_args = args[0], tuple(args[1:])
        index = jnp.asarray(index)
        if index.shape != () or not jnp.issubdtype(index.dtype, jnp.integer):
            raise ConstraintError(
                f"{self.__name__}: the branch index must be an integer scalar, got "
                f"{index.dtype}{list(index.shape)}"
            )
        # Assess runs the branches as generate: a branch not taken may lack its choices.
        run_mode = Mode.GENERATE if mode is Mode.ASSESS else mode
        run_key = jax.random.key(0) if key is None else key
        with handlers.handle(handlers.CombinatorScope("switch")), handlers.placeholder_scope():
            probes = self._probe(run_key, constraints, branch_args, run_mode)
            layout = self._union(probes, "choices")
            score_layout = self._union(probes, "site_scores")
            handlers.record_switched(layout)
            extra_names = sorted(set().union(*(set(p.extras) for p in probes)))
            dtype = jnp.result_type(*[p.score.dtype for p in probes])
            given = [a for a in constraints.addresses()
                     if mode is Mode.ASSESS or handlers.is_constraint(a)]
            branches = [self._branch(b, set(p.choices.addresses()), layout, score_layout, extra_names,
                                     given, mode, dtype)
                        for b, p in zip(self.branches, probes)]
            count = len(self.branches)
            validation.check(
                (index >= 0) & (index < count),
                f"{self.__name__}: branch index {{index}} is out of range [0, {count})", index=index,
            )
            choices, retval, score, extras, site_scores, weight = jax.lax.switch(
                jnp.clip(index, 0, count - 1).astype(jnp.int32), branches, run_key, constraints, branch_args,
            )
        # An out-of-range index is not clamped into a silent answer: its score is NaN.
        in_range = (index >= 0) & (index < count)
        score = jnp.where(in_range, score, jnp.nan)
        weight = jnp.where(in_range, weight, jnp.nan)
        return Trace(self, args, retval, choices, score, extras, site_scores), weight

    @staticmethod
    def _branch(branch, own, layout, score_layout, extra_names, given, mode, dtype):
        # Given values at addresses this branch never visits: if one is real (not a
        # placeholder), the choices are impossible under this branch.
        foreign = [a for a in given if a not in own]
        covered = all(a in given for a in own)

        def run(k, c, a):
            trace, weight = branch._run(k, c, a, Mode.GENERATE if mode is Mode.ASSESS else mode)
            mine = trace.choices.to_dict()
            choices = {address: mine[address] if address in mine else placeholder_like(jnp.zeros(s.shape, s.dtype))
                       for address, s in layout.items()}
            mine_scores = trace.site_scores.to_dict() if trace.site_scores is not None else {}
            site_scores = {address: mine_scores[address] if address in mine_scores else jnp.zeros(s.shape, s.dtype)
                           for address, s in score_layout.items()}
            extras = {n: trace.extras.get(n, jnp.zeros((), dtype)) for n in extra_names}
            impossible = jnp.asarray(False)
            for address in foreign:
                impossible = impossible | ~_is_placeholder(jnp.asarray(c[address]))
            score = trace.score.astype(dtype)
            if mode is Mode.ASSESS:
                # Every choice of the taken branch must be given (not a placeholder).
                missing = jnp.asarray(not covered)
                for address in own:
                    if address in given:
                        missing = missing | _is_placeholder(jnp.asarray(c[address]))
                score = jnp.where(missing, jnp.nan, score)
                weight = score
            weight = jnp.where(impossible, -jnp.inf, jnp.asarray(weight, dtype))
            if mode is Mode.ASSESS:
                score = weight
            return ChoiceMap(choices), trace.retval, score, extras, ChoiceMap(site_scores), weight

        return run


def switch(*branches: GenerativeFunction) -> Switch:
    """Choose among generative functions with a (traced) index.

    Arguments are ``(index, *args)``; every branch takes ``*args`` and must return the
    same structure. The trace's choices are the union of the branches' addresses
    (values of branches not taken are placeholders: NaN, or the integer minimum).

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def small():
        ...     return pg.sample("x", pg.Normal(0.0, 0.1))
        >>> @pg.gen
        ... def wide():
        ...     return pg.sample("x", pg.Normal(0.0, 10.0))
        >>> tr = pg.switch(small, wide).simulate(jax.random.key(0), 1)
        >>> tr.choices.addresses()
        [('x',)]
    """
    return Switch(branches)


def mix(*components: GenerativeFunction) -> GenerativeFunction:
    """A mixture: draw ``"component"`` from a Categorical, then that component at ``"value"``.

    Arguments are ``(logits, *component_args)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def left():
        ...     return pg.sample("x", pg.Normal(-2.0, 1.0))
        >>> @pg.gen
        ... def right():
        ...     return pg.sample("x", pg.Normal(2.0, 1.0))
        >>> mixture = pg.mix(left, right)
        >>> tr = mixture.simulate(jax.random.key(0), jnp.log(jnp.array([0.3, 0.7])))
        >>> sorted(tr.choices.addresses())
        [('component',), ('value', 'x')]
    """
    branches = switch(*components)
    count = len(components)

    @gen
    def mixture(logits, *args):
        if jnp.shape(logits)[-1:] != (count,):
            raise ConstraintError(
                f"{mixture.__name__}: logits has shape {tuple(jnp.shape(logits))}, but there are "
                f"{count} components (the last axis must have size {count})"
            )
        index = sample("component", Categorical(logits=logits))
        return sample("value", branches, index, *args)

    mixture.__name__ = f"mix({', '.join(c.__name__ for c in components)})"
    return mixture

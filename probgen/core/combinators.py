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

from probgen.core import interception
from probgen.core.choicemap import ChoiceMap, format_address
from probgen.core.errors import ConstraintError
from probgen.core.gen import gen, placeholder_like, sample
from probgen.core.gfi import GenerativeFunction, Mode, check_args
from probgen.core.trace import Trace
from probgen.distributions import Categorical


def _split(key, n: int):
    return None if key is None else jax.random.split(key, n)


def _check_leading_axis(name: str, constraints: ChoiceMap, size: int) -> None:
    for address, value in constraints.to_dict().items():
        shape = jnp.shape(value)
        if not shape or shape[0] != size:
            full = format_address(interception.full_address(address))
            raise ConstraintError(
                f"constraint at {full!r} under the {name} combinator needs a leading axis of "
                f"size {size} (one value per element), got shape {tuple(shape)}"
            )


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
            raise ValueError(
                f"{self.__name__}: in_axes has {len(in_axes)} entries for {len(args)} arguments"
            )
        sizes = set()
        for arg, axis in zip(args, in_axes):
            if axis is None:
                continue
            for leaf in jax.tree.leaves(arg):
                sizes.add(jnp.shape(leaf)[axis])
        if not sizes:
            raise ValueError(f"{self.__name__}: no argument is mapped (all in_axes are None); use repeat(gf, n)")
        if len(sizes) > 1:
            raise ValueError(f"{self.__name__}: mapped arguments disagree on the axis size: {sorted(sizes)}")
        return sizes.pop()

    def _run(self, key, constraints, args, mode):
        size = self._size(args)
        _check_leading_axis(self.__name__, constraints, size)
        in_axes = self.in_axes if isinstance(self.in_axes, tuple) else (self.in_axes,) * len(args)

        def one(k, c, a):
            trace, weight = self.gf._run(k, c, a, mode)
            return trace.choices, trace.retval, trace.score, trace.extras, weight

        with interception.combinator_scope("vmap"):
            choices, retval, scores, extras, weights = jax.vmap(
                one, in_axes=(None if key is None else 0, 0, in_axes), axis_size=size
            )(_split(key, size), constraints, args)
        trace = Trace(self, args, retval, choices, jnp.sum(scores), _sum_extras(extras))
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
    if not isinstance(num_repeats, int) or num_repeats < 1:
        raise ValueError(f"repeat needs a positive int num_repeats, got {num_repeats!r}")
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
                raise ValueError(f"{self.__name__}: xs leaves disagree on their leading axis: {sorted(sizes)}")
            size = sizes.pop()
            if self.length is not None and self.length != size:
                raise ValueError(f"{self.__name__}: length={self.length} but xs has {size} steps")
            return size
        if self.length is None:
            raise ValueError(f"{self.__name__}: give xs or a length")
        return self.length

    def _run(self, key, constraints, args, mode):
        if len(args) != 2:
            raise TypeError(f"{self.__name__} takes (init_carry, xs), got {len(args)} arguments")
        init, xs = args
        length = self._length(xs)
        _check_leading_axis(self.__name__, constraints, length)

        def body(carry, step_inputs):
            k, c, x = step_inputs
            trace, weight = self.kernel._run(k, c, (carry, x), mode)
            out = trace.retval
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(
                    f"the kernel of {self.__name__} must return a (carry, output) pair, got "
                    f"{type(out).__name__}"
                )
            new_carry, y = out
            return new_carry, (trace.choices, y, trace.score, trace.extras, weight)

        with interception.combinator_scope("scan"):
            final, (choices, ys, scores, extras, weights) = jax.lax.scan(
                body, init, (_split(key, length), constraints, xs), length=length
            )
        trace = Trace(self, args, (final, ys), choices, jnp.sum(scores), _sum_extras(extras))
        return trace, jnp.sum(weights)


def scan(kernel: GenerativeFunction, length: int | None = None) -> Scan:
    """A generative function over sequences: ``lax.scan`` of a kernel GF.

    The kernel takes ``(carry, x)`` and returns ``(carry, y)``; the scan takes
    ``(init_carry, xs)`` and returns ``(final_carry, ys)``. Choices get a leading time
    axis. One ``lax.scan``: a 1,000-step model compiles like a 10-step one.

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
            raise ValueError("switch needs at least one branch")
        self.branches = tuple(branches)
        self.__name__ = f"switch({', '.join(b.__name__ for b in self.branches)})"

    def _union_layout(self, key, constraints, args, mode) -> dict:
        """Shapes and dtypes of every branch's choices (static)."""
        layout: dict = {}
        probe_key = jax.random.key(0) if key is None else key
        probe_mode = Mode.GENERATE if mode is Mode.ASSESS else mode
        for branch in self.branches:
            shapes = jax.eval_shape(
                lambda k, c, a, b=branch: b._run(k, c, a, probe_mode)[0].choices,
                probe_key, constraints, args,
            )
            for address, spec in shapes.to_dict().items():
                if address in layout and (layout[address].shape, layout[address].dtype) != (spec.shape, spec.dtype):
                    raise ValueError(
                        f"{self.__name__}: branches disagree on the shape of address "
                        f"{format_address(address)!r}: {layout[address].shape} vs {spec.shape}"
                    )
                layout[address] = spec
        return layout

    def _run(self, key, constraints, args, mode):
        if not args:
            raise TypeError(f"{self.__name__} takes (index, *branch_args)")
        index, branch_args = args[0], tuple(args[1:])
        run_mode = Mode.GENERATE if mode is Mode.ASSESS else mode
        run_key = jax.random.key(0) if key is None else key
        with interception.combinator_scope("switch"):
            layout = self._union_layout(key, constraints, branch_args, mode)
            extra_names = set()
            for branch in self.branches:
                extras = jax.eval_shape(
                    lambda k, c, a, b=branch: b._run(k, c, a, run_mode)[0].extras,
                    run_key, constraints, branch_args,
                )
                extra_names |= set(extras)

            def make(branch):
                def run(k, c, a):
                    trace, weight = branch._run(k, c, a, run_mode)
                    own = trace.choices.to_dict()
                    union = {
                        address: own[address] if address in own else placeholder_like(jnp.zeros(s.shape, s.dtype))
                        for address, s in layout.items()
                    }
                    extras = {n: trace.extras.get(n, jnp.zeros(())) for n in sorted(extra_names)}
                    if mode is Mode.ASSESS:
                        covered = all(address in c for address in own)
                        score = trace.score if covered else jnp.nan
                        weight = score
                    else:
                        score = trace.score
                    return ChoiceMap(union), trace.retval, score, extras, weight

                return run

            choices, retval, score, extras, weight = jax.lax.switch(
                jnp.asarray(index, jnp.int32), [make(b) for b in self.branches],
                run_key, constraints, branch_args,
            )
        return Trace(self, args, retval, choices, score, extras), weight


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

    @gen
    def mixture(logits, *args):
        index = sample("component", Categorical(logits=logits))
        return sample("value", branches, index, *args)

    mixture.__name__ = f"mix({', '.join(c.__name__ for c in components)})"
    return mixture

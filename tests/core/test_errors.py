"""Each error raises at trace time and names the address or argument at fault."""

import jax
import jax.numpy as jnp
import pytest

import probgen as pg


@pg.gen
def model(mu):
    z = pg.sample("z", pg.Normal(mu, 1.0))
    pg.sample("x", pg.Normal(z, 1.0))
    return z


def test_duplicate_address():
    @pg.gen
    def twice():
        pg.sample("z", pg.Normal(0.0, 1.0))
        return pg.sample("z", pg.Normal(0.0, 1.0))

    with pytest.raises(pg.AddressError, match="'z' is visited twice"):
        jax.jit(twice.simulate)(jax.random.key(0))


def test_duplicate_address_inside_nested_call_names_full_path():
    @pg.gen
    def inner():
        pg.sample("w", pg.Normal(0.0, 1.0))
        return pg.sample("w", pg.Normal(0.0, 1.0))

    @pg.gen
    def outer():
        return pg.sample("layer", inner)

    with pytest.raises(pg.AddressError, match="layer/w"):
        outer.simulate(jax.random.key(0))


def test_unconsumed_constraint():
    with pytest.raises(pg.ConstraintError, match="'zz'.*not consumed"):
        model.generate(jax.random.key(0), {"zz": 1.0}, 0.0)
    tr = model.simulate(jax.random.key(0), 0.0)
    with pytest.raises(pg.ConstraintError, match="'y'"):
        model.update(jax.random.key(0), tr, {"y": 1.0})


def test_unconsumed_constraint_under_jit():
    with pytest.raises(pg.ConstraintError, match="not consumed"):
        jax.jit(lambda k: model.generate(k, {"nope": 1.0}, 0.0))(jax.random.key(0))


def test_constraint_shape_mismatch():
    @pg.gen
    def vec():
        return pg.sample("w", pg.Normal(jnp.zeros(3), 1.0))

    with pytest.raises(pg.ConstraintError, match=r"'w' has shape \(2,\).*\(3,\)"):
        vec.generate(jax.random.key(0), {"w": jnp.zeros(2)})


def test_constraint_leading_axis_mismatch_in_vmap():
    @pg.gen
    def point(mu):
        return pg.sample("x", pg.Normal(mu, 1.0))

    with pytest.raises(pg.ConstraintError, match="'x'.*leading axis of size 3"):
        pg.vmap(point).generate(jax.random.key(0), {"x": jnp.zeros(4)}, jnp.zeros(3))


def test_assess_missing_choice():
    with pytest.raises(pg.MissingChoiceError, match="'x'"):
        model.assess({"z": 0.0}, 0.0)


def test_non_array_argument():
    with pytest.raises(pg.ArgumentError, match="argument 0 .* str"):
        model.simulate(jax.random.key(0), "zero")
    with pytest.raises(pg.ArgumentError, match=r"argument 0\['f'\]"):
        model.simulate(jax.random.key(0), {"f": "text"})
    # A function among the arguments (an equinox Module's activation) is static data of the
    # trace, not an error: tests/train/test_module_params.py.


def test_sample_outside_gen():
    with pytest.raises(RuntimeError, match="outside a generative function"):
        pg.sample("z", pg.Normal(0.0, 1.0))


def test_calling_gf_directly_explains():
    with pytest.raises(TypeError, match="generative function"):
        model(0.0)


def test_strategy_not_supported():
    @pg.gen
    def bad():
        return pg.sample("b", pg.Bernoulli(probs=0.3), strategy=pg.REPARAM)

    with pytest.raises(pg.StrategyError, match="'b'.*reparam"):
        bad.simulate(jax.random.key(0))

    @pg.gen
    def bad_enum():
        return pg.sample("n", pg.with_strategy(pg.Normal(0.0, 1.0), pg.ENUM))

    with pytest.raises(pg.StrategyError, match="'n'.*finite support"):
        bad_enum.simulate(jax.random.key(0))

    @pg.gen
    def bad_implicit():
        return pg.sample("n", pg.Normal(0.0, 1.0), strategy=pg.IMPLICIT)

    with pytest.raises(pg.StrategyError, match="Gamma, Beta and Dirichlet"):
        bad_implicit.simulate(jax.random.key(0))


def test_value_and_prefix_overlap():
    @pg.gen
    def overlap():
        pg.sample("a", pg.Normal(0.0, 1.0))
        return pg.sample(("a", "b"), pg.Normal(0.0, 1.0))

    with pytest.raises(pg.AddressError, match="overlaps"):
        overlap.simulate(jax.random.key(0))


def test_scan_kernel_must_return_pair():
    @pg.gen
    def step(c, x):
        return pg.sample("z", pg.Normal(c, 1.0))

    with pytest.raises(TypeError, match=r"\(carry, output\) pair"):
        pg.scan(step, length=3).simulate(jax.random.key(0), 0.0, None)

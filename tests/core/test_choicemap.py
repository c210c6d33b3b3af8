import jax
import jax.numpy as jnp
import pytest

import probgen as pg


def test_build_read_hierarchy():
    cm = pg.ChoiceMap({"z": 1.0, ("layer", "w"): 2.0, "nested": {"a": 3.0}})
    assert float(cm["z"]) == 1.0
    assert float(cm["layer", "w"]) == 2.0
    assert float(cm["nested", "a"]) == 3.0
    assert cm.addresses() == [("layer", "w"), ("nested", "a"), ("z",)]
    assert ("layer", "w") in cm and "missing" not in cm
    assert isinstance(cm["layer"], pg.ChoiceMap)


def test_missing_address_names_it():
    cm = pg.ChoiceMap({"z": 1.0})
    with pytest.raises(KeyError, match="'q'"):
        cm["q"]


def test_merge_prefers_right_and_keeps_rest():
    a = pg.ChoiceMap({"z": 1.0, ("l", "w"): 2.0})
    b = pg.ChoiceMap({"z": 5.0, ("l", "v"): 3.0})
    m = a.merge(b)
    assert float(m["z"]) == 5.0
    assert float(m["l", "w"]) == 2.0 and float(m["l", "v"]) == 3.0


def test_filter_and_complement():
    cm = pg.ChoiceMap({"z": 1.0, ("l", "w"): 2.0, ("l", "v"): 3.0})
    assert cm.filter(pg.select("l")).addresses() == [("l", "v"), ("l", "w")]
    assert cm.filter(pg.select(("l", "w"), "z")).addresses() == [("l", "w"), ("z",)]
    assert cm.filter(pg.select("l").complement()).addresses() == [("z",)]
    assert cm.filter(pg.select(("l", "w")).complement()).addresses() == [("l", "v"), ("z",)]


def test_pytree_roundtrip_under_jit_and_vmap():
    cm = pg.ChoiceMap({"z": jnp.arange(3.0), ("l", "w"): jnp.ones((3, 2))})
    doubled = jax.jit(lambda c: jax.tree.map(lambda x: 2 * x, c))(cm)
    assert isinstance(doubled, pg.ChoiceMap)
    assert jnp.allclose(doubled["l", "w"], 2.0)
    sums = jax.vmap(lambda c: c["z"] + c["l", "w"].sum())(cm)
    assert jnp.allclose(sums, jnp.arange(3.0) + 2.0)


def test_canonical_order_makes_equal_treedefs():
    a = pg.ChoiceMap({"b": 1.0, "a": 2.0})
    b = pg.ChoiceMap({"a": 2.0, "b": 1.0})
    assert jax.tree.structure(a) == jax.tree.structure(b)


def test_bad_address_type():
    with pytest.raises(TypeError, match="address"):
        pg.ChoiceMap({3: 1.0})

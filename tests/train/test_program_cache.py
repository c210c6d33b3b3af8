"""pg.fit reuses a compiled program only for a loss and optimizer that compute the same thing."""

import gc
import sys
import types
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probgen as pg
import probgen.train.fitting as fit_module
import probgen.train.programs as programs
from probgen.train.programs import _ProgramCache, _Structure

sweep_module = sys.modules["probgen.train.sweep"]  # ``probgen.train.sweep`` is the function

TRACES = {"n": 0}
SGD = optax.sgd(0.1)  # one optimizer object: only the loss can tell the runs apart


def counted_loss(params, key, batch):
    TRACES["n"] += 1  # runs once per trace, never per step
    return jnp.sum((params - 3.0) ** 2)


def _fit(loss, optimizer, p0=None, steps=10):
    p0 = jnp.array([0.0, 1.0, 5.0]) if p0 is None else p0
    return pg.train.fit(loss, p0, optimizer, jax.random.key(0), steps=steps, chunk_size=steps, progress=False)


def _reference(loss, optimizer, p0=None, steps=10):
    """The same run as a hand-written eager optax loop."""
    params = jnp.array([0.0, 1.0, 5.0]) if p0 is None else p0
    state = optimizer.init(params)
    for _ in range(steps):
        grads = jax.grad(loss)(params, None, None)
        updates, state = optimizer.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return np.asarray(params)


def _tolerance(array):
    return 1e-5 if np.asarray(array).dtype == np.float32 else 1e-12


def test_fresh_optimizer_and_rebuilt_lambda_do_not_retrace():
    TRACES["n"] = 0
    first = _fit(counted_loss, optax.adam(0.05))
    assert TRACES["n"] == 1
    second = _fit(counted_loss, optax.adam(0.05))  # a notebook cell run again
    assert TRACES["n"] == 1
    np.testing.assert_array_equal(first.params, second.params)
    for _ in range(2):  # a lambda built anew on each pass: same code, same closure
        _fit(lambda p, k, b: counted_loss(p, k, b), optax.inject_hyperparams(optax.adam)(learning_rate=0.05))
    assert TRACES["n"] == 2


def _target_loss(target):
    return lambda params, key, batch: jnp.sum((params - target) ** 2)


@pytest.mark.parametrize("target", [3.0, -1.0])
@pytest.mark.parametrize("learning_rate", [0.05, 0.2])
def test_other_constants_and_learning_rates_never_share_a_program(target, learning_rate):
    result = _fit(_target_loss(target), optax.adam(learning_rate), steps=40)
    expected = _reference(_target_loss(target), optax.adam(learning_rate), steps=40)
    np.testing.assert_allclose(result.params, expected, rtol=_tolerance(expected), atol=_tolerance(expected))


def _notebook_function(source, **globals_):
    """A function defined in a notebook cell (module ``__main__``) with the given globals."""
    namespace = {"__name__": "__main__", "jnp": jnp, **globals_}
    exec(source, namespace)
    return namespace


def test_a_rebound_notebook_global_recompiles():
    # In a notebook: ``target = 3.0`` / ``def loss ...`` / fit; then ``target = -1.0`` in
    # another cell and the fit cell run again. Comparing the function by identity reused
    # the program compiled for target 3.0 and fitted to 3 again, silently.
    namespace = _notebook_function("def loss(p, k, b):\n    return jnp.sum((p - target) ** 2)\n", target=3.0)
    loss = namespace["loss"]
    first = _fit(loss, SGD, steps=30)
    namespace["target"] = -1.0
    second = _fit(loss, SGD, steps=30)
    # SGD on (p - c)^2: p_n = c + (1 - 2 lr)^n (p_0 - c).
    p0 = np.array([0.0, 1.0, 5.0])
    for result, target in ((first, 3.0), (second, -1.0)):
        expected = target + 0.8 ** 30 * (p0 - target)
        np.testing.assert_allclose(result.params, expected, rtol=1e-5, atol=1e-5)


def test_mutated_closure_values_recompile():
    # (jax itself keeps numpy constants by identity, so arrays are replaced, not written into.)
    settings = types.SimpleNamespace(target=3.0, shift=np.zeros(3))

    def loss(params, key, batch):
        return jnp.sum((params - settings.target - settings.shift) ** 2)

    p0 = np.array([0.0, 1.0, 5.0])
    for target, offset in ((3.0, 0.0), (-1.0, 0.0), (-1.0, 2.0)):
        settings.target = target
        settings.shift = np.full(3, offset)
        result = _fit(loss, SGD, steps=30)
        expected = target + offset + 0.8 ** 30 * (p0 - target - offset)
        np.testing.assert_allclose(result.params, expected, rtol=1e-5, atol=1e-5)


def test_cache_stays_bounded_and_releases_old_programs():
    first = _target_loss(100.0)
    released = weakref.ref(first)
    _fit(first, optax.sgd(0.1), steps=3)
    del first
    for i in range(20):  # 20 losses that differ: 20 compilations, never more than 8 kept
        _fit(_target_loss(float(i)), optax.sgd(0.1), steps=3)
        assert len(fit_module._compiled_chunk) <= programs._PROGRAM_CACHE_SIZE
    gc.collect()
    assert released() is None  # neither our cache nor jax's keeps the evicted program alive


def test_state_too_large_to_compare_compiles_uncached(monkeypatch):
    monkeypatch.setattr(fit_module, "_compiled_chunk", _ProgramCache(fit_module._chunk_program))
    lookup = np.array([3.0, -1.0], dtype=object)  # object arrays cannot be compared by value
    loss = lambda p, k, b: jnp.sum((p - float(lookup[0])) ** 2)  # noqa: E731
    result = _fit(loss, optax.sgd(0.1), steps=30)
    np.testing.assert_allclose(result.params, 3.0 + 0.8 ** 30 * (np.array([0.0, 1.0, 5.0]) - 3.0), rtol=1e-5)
    assert len(fit_module._compiled_chunk) == 0


def _key(obj):
    return _Structure().key(obj)


def _closure_over(value):
    return lambda: value


@pytest.mark.parametrize(
    "left, right",
    [
        (0.0, -0.0),
        (1, 1.0),
        (1, True),
        (0.05, 0.05000001),
        (np.float32(0.05), np.float64(0.05)),
        (np.zeros(3), np.array([0.0, 0.0, 1e-30])),
        (np.zeros(3, np.float32), np.zeros(3, np.float64)),
        (jnp.zeros(3), jnp.ones(3)),
        ([1.0, 2.0], (1.0, 2.0)),
        ({"a": 1.0}, {"b": 1.0}),
    ],
)
def test_values_that_differ_give_keys_that_differ(left, right):
    assert _key(_closure_over(left)) != _key(_closure_over(right))


def test_things_that_compute_the_same_give_equal_keys():
    assert _key(optax.adam(0.05)) == _key(optax.adam(0.05))
    assert _key(optax.adam(0.05)) != _key(optax.adam(0.05, b1=0.8))
    assert _key(optax.chain(optax.clip(1.0), optax.sgd(0.1))) == _key(optax.chain(optax.clip(1.0), optax.sgd(0.1)))
    assert _key(optax.chain(optax.clip(1.0), optax.sgd(0.1))) != _key(optax.chain(optax.clip(2.0), optax.sgd(0.1)))
    assert _key(_closure_over(float("nan"))) == _key(_closure_over(float("nan")))
    assert _key(_closure_over(jnp.arange(3.0))) == _key(_closure_over(jnp.arange(3.0)))


def test_recursive_and_self_referencing_closures_are_described():
    namespace = _notebook_function(
        "def loss(p, k, b):\n    return jnp.sum(p ** 2) if k is None else loss(p, None, b)\n"
    )
    cyclic = {}
    cyclic["self"] = cyclic
    assert _key(namespace["loss"]) == _key(namespace["loss"])
    assert _key(_closure_over(cyclic)) == _key(_closure_over(cyclic))


def test_program_cache_is_lru():
    built = []
    cache = _ProgramCache(lambda part: built.append(part) or object(), size=2)
    a, b, c = _closure_over(1.0), _closure_over(2.0), _closure_over(3.0)
    programs = [cache(a), cache(b), cache(_closure_over(1.0)), cache(c), cache(b)]
    assert programs[0] is programs[2] and programs[1] is not programs[4]  # b was evicted by c
    assert len(built) == 4 and len(cache) == 2


SWEEP_TRACES = {"n": 0}


def _count_sweep_trace():
    SWEEP_TRACES["n"] += 1


def test_sweep_with_a_rebuilt_train_fn_compiles_once():
    SWEEP_TRACES["n"] = 0

    def sweep_once():
        def train(learning_rate):  # a counter it closed over would change its description
            _count_sweep_trace()
            optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
            return pg.train.fit(counted_loss, jnp.zeros(()), optimizer, jax.random.key(0), steps=5).params

        return pg.train.sweep(train, learning_rate=[0.1, 0.2])

    first, second = sweep_once(), sweep_once()
    assert SWEEP_TRACES["n"] == 3  # the first sweep traces init, one chunk length, finish; the second none
    assert len(sweep_module._compiled_members) <= programs._PROGRAM_CACHE_SIZE
    # SGD on (p - 3)^2 from 0: p_5 = 3 (1 - (1 - 2 lr)^5).
    expected = 3.0 * (1.0 - (1.0 - 2.0 * np.array([0.1, 0.2])) ** 5)
    np.testing.assert_allclose(second.results, expected, rtol=1e-5)
    np.testing.assert_array_equal(first.results, second.results)

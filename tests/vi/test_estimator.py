"""Unbiasedness of pg.vi.expectation for every supported (strategy x distribution) pair.

Each test draws many independent gradient estimates (fixed seed, vmapped, jitted) and
checks that their mean matches the exact gradient within 4 standard errors; exact
gradients come from closed-form moments (differentiated with jax.grad) or enumeration.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg

NUM = 2000
C = 0.7


def _moment_target(dist):
    """E[(x - C)^2] = Var + (mean - C)^2, summed over elements."""
    return jnp.sum(dist.variance + (dist.mean - C) ** 2)


def _check(grads, exact):
    grads = np.asarray(grads).reshape(grads.shape[0], -1)
    exact = np.asarray(exact).reshape(-1)
    mean = grads.mean(0)
    se = grads.std(0) / np.sqrt(grads.shape[0])
    assert np.all(np.abs(mean - exact) <= 4 * se + 1e-4 * (1 + np.abs(exact))), (mean, exact, se)


def _grad_samples(strategy, make, f, theta, num=NUM):
    @pg.gen
    def family(th):
        return pg.sample("x", make(th), strategy=strategy)

    def program(key, th):
        return f(family.simulate(key, th)["x"])

    est = pg.vi.expectation(program)
    keys = jax.random.split(jax.random.key(0), num)
    return jax.jit(jax.vmap(jax.grad(est.estimate, argnums=1), in_axes=(0, None)))(keys, theta)


def square(x):
    return jnp.sum((jnp.asarray(x, jnp.float32) - C) ** 2)


MOMENT_CASES = [
    ("Normal", lambda th: pg.Normal(th[0], th[1]), jnp.array([0.3, 1.2]),
     [pg.REPARAM, pg.PATH, pg.REINFORCE, pg.MVD]),
    ("Bernoulli", lambda th: pg.Bernoulli(probs=th), jnp.array(0.3), [pg.REINFORCE, pg.ENUM, pg.MVD]),
    ("Poisson", lambda th: pg.Poisson(th), jnp.array(1.7), [pg.REINFORCE, pg.MVD]),
    ("Geometric", lambda th: pg.Geometric(probs=th), jnp.array(0.4), [pg.REINFORCE, pg.MVD]),
    ("Gamma", lambda th: pg.Gamma(th[0], th[1]), jnp.array([2.0, 1.5]), [pg.IMPLICIT, pg.REINFORCE]),
    ("Beta", lambda th: pg.Beta(th[0], th[1]), jnp.array([2.0, 3.0]), [pg.IMPLICIT, pg.REINFORCE]),
]


@pytest.mark.parametrize(
    "name,make,theta,strategy",
    [(n, m, t, s) for n, m, t, ss in MOMENT_CASES for s in ss],
    ids=[f"{n}-{s.value}" for n, _, _, ss in MOMENT_CASES for s in ss],
)
def test_unbiased_gradient_closed_form(name, make, theta, strategy):
    exact = jax.grad(lambda th: _moment_target(make(th)))(theta)
    _check(_grad_samples(strategy, make, square, theta), exact)


@pytest.mark.parametrize("strategy", [pg.IMPLICIT, pg.REINFORCE])
def test_unbiased_gradient_dirichlet(strategy):
    weights = jnp.array([1.0, -2.0, 0.5])

    def make(th):
        return pg.Dirichlet(th)

    def f(x):
        return jnp.sum(weights * (x - 0.2) ** 2)

    def exact_value(th):
        d = make(th)
        return jnp.sum(weights * (d.variance + (d.mean - 0.2) ** 2))

    theta = jnp.array([1.5, 2.0, 3.0])
    _check(_grad_samples(strategy, make, f, theta), jax.grad(exact_value)(theta))


def _categorical_value(probs, f):
    return sum(probs[k] * f(jnp.asarray(k)) for k in range(probs.shape[0]))


@pytest.mark.parametrize("strategy", [pg.REINFORCE, pg.ENUM, pg.MVD])
def test_unbiased_gradient_categorical(strategy):
    def f(x):
        return (jnp.asarray(x, jnp.float32) - 1.3) ** 3

    def make(th):
        return pg.Categorical(logits=th)

    theta = jnp.array([0.2, -0.5, 1.0, 0.1])
    exact = jax.grad(lambda th: _categorical_value(jax.nn.softmax(th), f))(theta)
    _check(_grad_samples(strategy, make, f, theta), exact)


@pytest.mark.parametrize("strategy", [pg.REINFORCE, pg.ENUM, pg.MVD])
def test_batched_site_exact_enumeration(strategy):
    """A Bernoulli site with batch shape (2,) and a non-additive function of both elements."""

    def f(x):
        x = jnp.asarray(x, jnp.float32)
        return (x[0] + 2.0 * x[1] - 1.2) ** 2

    def make(th):
        return pg.Bernoulli(probs=th)

    def exact_value(th):
        total = 0.0
        for a in (0, 1):
            for b in (0, 1):
                pa = th[0] if a else 1 - th[0]
                pb = th[1] if b else 1 - th[1]
                total = total + pa * pb * f(jnp.array([a, b]))
        return total

    theta = jnp.array([0.3, 0.6])
    _check(_grad_samples(strategy, make, f, theta), jax.grad(exact_value)(theta))


def test_reinforce_baseline_unbiased_and_lower_variance():
    def make(th):
        return pg.with_strategy(pg.Bernoulli(probs=th), pg.REINFORCE, baseline=8.0)

    def f(x):
        return 10.0 - 3.0 * jnp.asarray(x, jnp.float32)

    theta = jnp.array(0.3)
    with_baseline = _grad_samples(None, make, f, theta)
    plain = _grad_samples(pg.REINFORCE, lambda th: pg.Bernoulli(probs=th), f, theta)
    _check(with_baseline, jnp.array(-3.0))
    _check(plain, jnp.array(-3.0))
    assert np.std(with_baseline) < 0.5 * np.std(plain)


@pytest.mark.parametrize("discrete", [pg.ENUM, pg.MVD, pg.REINFORCE])
def test_mixed_strategies_two_sites(discrete):
    """b ~ Bernoulli(p), z ~ Normal(b mu, 1) (REPARAM); E[z^2] = p mu^2 + 1."""

    @pg.gen
    def family(p, mu):
        b = pg.sample("b", pg.Bernoulli(probs=p), strategy=discrete)
        return pg.sample("z", pg.Normal(b * mu, 1.0))

    def program(key, p, mu):
        return family.simulate(key, p, mu).retval ** 2

    est = pg.vi.expectation(program)
    keys = jax.random.split(jax.random.key(1), NUM)
    grads = jax.jit(jax.vmap(jax.grad(est.estimate, argnums=(1, 2)), in_axes=(0, None, None)))(keys, 0.3, 1.5)
    _check(jnp.stack(grads, -1), jnp.array([1.5**2, 2 * 0.3 * 1.5]))


def test_path_gradient_is_unbiased_for_elbo():
    """Sticking the landing: E over q=N(m,s) of log N(z;0,1) - log q(z); exact grads -m, -s + 1/s."""

    @pg.gen
    def guide(m, s):
        pg.sample("z", pg.Normal(m, s), strategy=pg.PATH)

    @pg.gen
    def prior():
        pg.sample("z", pg.Normal(0.0, 1.0))

    def program(key, m, s):
        tr = guide.simulate(key, m, s)
        return prior.assess(tr.choices)[0] - tr.score

    est = pg.vi.expectation(program)
    keys = jax.random.split(jax.random.key(2), NUM)
    grads = jax.jit(jax.vmap(jax.grad(est.estimate, argnums=(1, 2)), in_axes=(0, None, None)))(keys, 0.4, 0.8)
    _check(jnp.stack(grads, -1), jnp.array([-0.4, -0.8 + 1 / 0.8]))


def test_reinforce_inside_scan_combinator():
    """T Bernoulli(p) REINFORCE sites inside pg.scan; E[(Σ b)^2] = T p(1-p) + (T p)^2."""
    steps = 5

    @pg.gen
    def kernel(count, _):
        b = pg.sample("b", pg.Bernoulli(probs=_p_holder[0]))
        return count + b, None

    _p_holder = [None]

    @pg.gen
    def chain(p):
        _p_holder[0] = p
        final, _ = pg.sample("steps", pg.scan(kernel, length=steps), 0, None)
        return final

    def program(key, p):
        return jnp.asarray(chain.simulate(key, p).retval, jnp.float32) ** 2

    est = pg.vi.expectation(program)
    keys = jax.random.split(jax.random.key(3), NUM)
    grads = jax.jit(jax.vmap(jax.grad(est.estimate, argnums=1), in_axes=(0, None)))(keys, 0.3)
    _check(grads, jnp.array(steps * (1 - 2 * 0.3) + 2 * steps**2 * 0.3))


def test_value_is_unbiased_and_works_under_jit_vmap_and_scan():
    @pg.gen
    def family(p):
        return pg.sample("b", pg.Bernoulli(probs=p))

    est = pg.vi.expectation(lambda key, p: jnp.asarray(family.simulate(key, p).retval, jnp.float32))

    def body(p, key):
        value, grad = jax.value_and_grad(est, argnums=1)(key, p)
        return p, (value, grad)

    _, (values, grads) = jax.jit(lambda keys: jax.lax.scan(body, 0.3, keys))(jax.random.split(jax.random.key(4), NUM))
    _check(values[:, None], jnp.array([0.3]))
    _check(grads[:, None], jnp.array([1.0]))


def test_vmap_program_collects_particle_terms():
    """Particles from pg.vi.vmap_program: E[mean_k b_k^2 ...] gradient = 1 for Bernoulli(p)."""

    @pg.gen
    def family(p):
        return pg.sample("b", pg.Bernoulli(probs=p))

    def program(key, p):
        traces = pg.vi.vmap_program(lambda k: family.simulate(k, p))(jax.random.split(key, 3))
        return jnp.mean(jnp.asarray(traces.retval, jnp.float32))

    est = pg.vi.expectation(program)
    grads = jax.jit(jax.vmap(jax.grad(est.estimate, argnums=1), in_axes=(0, None)))(
        jax.random.split(jax.random.key(5), NUM), 0.3)
    _check(grads[:, None], jnp.array([1.0]))


# -- errors ------------------------------------------------------------------------------


def _simulate_program(gf, *args):
    return pg.vi.expectation(lambda key: jnp.asarray(0.0) + gf.simulate(key, *args).score)


def test_unsupported_strategy_is_a_clear_error():
    @pg.gen
    def bad():
        pg.sample("w", pg.Gamma(2.0, 1.0), strategy=pg.MVD)

    with pytest.raises(pg.StrategyError, match="'w'.*measure-valued"):
        _simulate_program(bad).estimate(jax.random.key(0))

    @pg.gen
    def bad_enum():
        pg.sample("y", pg.Normal(0.0, 1.0), strategy=pg.ENUM)

    with pytest.raises(pg.StrategyError, match="'y'.*enum"):
        _simulate_program(bad_enum).estimate(jax.random.key(0))


def test_enum_inside_scan_combinator_is_refused():
    @pg.gen
    def kernel(carry, _):
        return carry + pg.sample("b", pg.Bernoulli(probs=0.5), strategy=pg.ENUM), None

    @pg.gen
    def chain():
        pg.sample("steps", pg.scan(kernel, length=3), 0, None)

    with pytest.raises(pg.StrategyError, match="steps/b.*scan.*REINFORCE"):
        _simulate_program(chain).estimate(jax.random.key(0))


def test_plain_jax_vmap_leak_points_to_vmap_program():
    @pg.gen
    def family():
        return pg.sample("b", pg.Bernoulli(probs=0.5))

    def program(key):
        traces = jax.vmap(family.simulate)(jax.random.split(key, 3))
        return jnp.mean(traces.score)

    with pytest.raises(pg.vi.EstimatorError, match="pg.vi.vmap_program"):
        jax.jit(pg.vi.expectation(program).estimate)(jax.random.key(0))


def test_program_must_return_scalar():
    with pytest.raises(pg.vi.EstimatorError, match="scalar"):
        pg.vi.expectation(lambda key: jnp.zeros(3)).estimate(jax.random.key(0))


# -- compile time of a sequential model --------------------------------------------------


def _ssm_grad(steps):
    @pg.gen
    def model_step(z, _):
        z = pg.sample("z", pg.Normal(0.9 * z, 1.0))
        pg.sample("y", pg.Normal(z, 0.5))
        return z, None

    @pg.gen
    def guide_step(z, loc):
        return pg.sample("z", pg.Normal(loc + 0.5 * z, 0.8)), None

    @pg.gen
    def model():
        pg.sample("chain", pg.scan(model_step, length=steps), 0.0, None)

    @pg.gen
    def guide(locs):
        pg.sample("chain", pg.scan(guide_step), 0.0, locs)

    obj = pg.vi.elbo(model, guide)
    obs = pg.ChoiceMap({("chain", "y"): jnp.zeros(steps)})
    fn = jax.jit(jax.grad(obj.loss, argnums=3))
    start = time.perf_counter()
    fn.lower(jax.random.key(0), obs, (), (jnp.zeros(steps),)).compile()
    return time.perf_counter() - start


def test_sequential_elbo_gradient_compile_time_does_not_grow_with_length():
    short = _ssm_grad(10)
    long = _ssm_grad(500)
    assert long < 3.0 * max(short, 0.25), (short, long)

"""Benchmark pg.vi: VAE gradient steps and sequential-model compile times.

VAE: 64-dim binary data, encoder and decoder 2-layer MLPs (128 hidden, tanh), latent 8,
batch 128 and 1024; one step = gradient of the batch loss + an Adam update. Compared side
by side in one process:

* probgen ``pg.vi.elbo`` / ``pg.vi.iwae(K=8)`` (per-datapoint loss vmapped over the batch),
* the same estimator hand-written in JAX (reparameterized ELBO / IWAE),
* NumPyro SVI with ``Trace_ELBO`` / ``RenyiELBO(alpha=0, num_particles=8)`` (= IWAE).

Reported: median step time (after warm-up, ``block_until_ready``), probgen/baseline ratio,
compile time, and XLA cost-analysis flops of probgen vs hand-written. Then the compile
time of the ELBO gradient of a linear-Gaussian state-space model (``pg.scan``) at
T = 10, 100, 1000, against a hand-written ``lax.scan`` ELBO. Last, the SVI step of
``pg.vi.autoguide`` (mean-field and full-rank, ``Trace_ELBO``-style 1-particle ELBO, Adam)
against NumPyro's ``AutoNormal`` / ``AutoMultivariateNormal`` on Bayesian logistic
regression (scikit-learn's breast cancer, standardized) and eight schools.

Run: ``.venv/bin/python benchmarks/vi.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import probgen as pg

sys.path.insert(0, os.path.dirname(__file__))
from common import compiled_flops, interleaved_calls, print_table  # noqa: E402

DATA_DIM, HIDDEN, LATENT, PARTICLES = 64, 128, 8, 8


def mlp_init(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)} for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def mlp(params, x):
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def init_params(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "decoder": mlp_init(k1, [LATENT, HIDDEN, HIDDEN, DATA_DIM]),
        "encoder": mlp_init(k2, [DATA_DIM, HIDDEN, HIDDEN, 2 * LATENT]),
    }


def encode(encoder, x):
    out = mlp(encoder, x)
    return out[..., :LATENT], jax.nn.softplus(out[..., LATENT:]) + 1e-3


# -- probgen -------------------------------------------------------------------------------


@pg.gen
def model(decoder):
    z = pg.sample("z", pg.Normal(jnp.zeros(LATENT), 1.0))
    pg.sample("x", pg.Bernoulli(logits=mlp(decoder, z)))


@pg.gen
def guide(encoder, x):
    loc, scale = encode(encoder, x)
    pg.sample("z", pg.Normal(loc, scale))


def probgen_loss(objective):
    def loss(params, key, x):
        keys = jax.random.split(key, x.shape[0])
        per_point = jax.vmap(lambda k, xi: objective.loss(k, {"x": xi}, (params["decoder"],), (params["encoder"], xi)))
        return jnp.mean(per_point(keys, x))

    return loss


# -- hand-written JAX ------------------------------------------------------------------------


def _normal_logpdf(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi)


def hand_log_weights(params, key, x, num_particles):
    loc, scale = encode(params["encoder"], x)  # (B, L)
    eps = jax.random.normal(key, (num_particles,) + loc.shape)
    z = loc + scale * eps
    log_q = jnp.sum(_normal_logpdf(z, loc, scale), -1)
    log_prior = jnp.sum(_normal_logpdf(z, 0.0, 1.0), -1)
    logits = mlp(params["decoder"], z)
    log_lik = jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), -1)
    return log_prior + log_lik - log_q  # (K, B)


def hand_elbo(params, key, x):
    return -jnp.mean(hand_log_weights(params, key, x, 1))


def hand_iwae(params, key, x):
    log_w = hand_log_weights(params, key, x, PARTICLES)
    return -jnp.mean(jax.nn.logsumexp(log_w, 0) - jnp.log(PARTICLES))


# -- steps, timing ---------------------------------------------------------------------------


def make_step(loss):
    optimizer = optax.adam(1e-3)

    def step(params, state, key, x):
        value, grads = jax.value_and_grad(loss)(params, key, x)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    return jax.jit(step), optimizer


class Step(NamedTuple):
    """A compiled training step as an argument-less call that advances its own state."""

    call: Callable[[], Any]
    compile_s: float
    flops: float


def _keys(repeats: int):
    """The keys of the warm-up and timed calls, made before timing (the same for every step)."""
    return iter(list(jax.random.split(jax.random.key(7), repeats + 1)))


def prepare_step(step, optimizer, x, repeats: int) -> Step:
    """Compile a ``make_step`` step; each call takes the next of ``repeats + 1`` keys."""
    params = init_params()
    carry = [params, optimizer.init(params)]
    start = time.perf_counter()
    compiled = step.lower(carry[0], carry[1], jax.random.key(1), x).compile()
    compile_s = time.perf_counter() - start
    keys = _keys(repeats)

    def call():
        carry[0], carry[1], value = compiled(carry[0], carry[1], next(keys), x)
        return carry[0], value

    return Step(call, compile_s, compiled_flops(compiled) or float("nan"))


def prepare_numpyro(kind, x) -> Step:
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, RenyiELBO, Trace_ELBO

    init = init_params()

    def register(prefix, layers):
        return [{n: numpyro.param(f"{prefix}{i}_{n}", v) for n, v in layer.items()} for i, layer in enumerate(layers)]

    def np_model(x):
        decoder = register("dec", init["decoder"])
        with numpyro.plate("batch", x.shape[0]):
            z = numpyro.sample("z", dist.Normal(jnp.zeros(LATENT), 1.0).to_event(1))
            numpyro.sample("x", dist.Bernoulli(logits=mlp(decoder, z)).to_event(1), obs=x)

    def np_guide(x):
        encoder = register("enc", init["encoder"])
        with numpyro.plate("batch", x.shape[0]):
            loc, scale = encode(encoder, x)
            numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    loss = Trace_ELBO() if kind == "elbo" else RenyiELBO(alpha=0.0, num_particles=PARTICLES)
    svi = SVI(np_model, np_guide, numpyro.optim.optax_to_numpyro(optax.adam(1e-3)), loss)
    carry = [svi.init(jax.random.key(0), x)]
    start = time.perf_counter()
    compiled = jax.jit(svi.update).lower(carry[0], x).compile()
    compile_s = time.perf_counter() - start

    def call():  # NumPyro keeps its PRNG key in the SVI state
        carry[0], value = compiled(carry[0], x)
        return carry[0], value

    return Step(call, compile_s, float("nan"))


# -- sequential model --------------------------------------------------------------------------


def ssm_compile_times(steps):
    @pg.gen
    def model_step(z, _):
        z = pg.sample("z", pg.Normal(0.9 * z, 1.0))
        pg.sample("y", pg.Normal(z, 0.5))
        return z, None

    @pg.gen
    def guide_step(z, loc):
        return pg.sample("z", pg.Normal(loc + 0.5 * z, 0.8)), None

    @pg.gen
    def ssm():
        pg.sample("chain", pg.scan(model_step, length=steps), 0.0, None)

    @pg.gen
    def ssm_guide(locs):
        pg.sample("chain", pg.scan(guide_step), 0.0, locs)

    obj = pg.vi.elbo(ssm, ssm_guide)
    obs = pg.ChoiceMap({("chain", "y"): jnp.zeros(steps)})
    key, locs = jax.random.key(0), jnp.zeros(steps)

    def hand(key, ys, locs):
        def body(carry, inputs):
            z_prev, total = carry
            k, y, loc = inputs
            z = loc + 0.5 * z_prev + 0.8 * jax.random.normal(k)
            log_q = _normal_logpdf(z, loc + 0.5 * z_prev, 0.8)
            log_p = _normal_logpdf(z, 0.9 * z_prev, 1.0) + _normal_logpdf(y, z, 0.5)
            return (z, total + log_p - log_q), None

        (_, total), _ = jax.lax.scan(body, (0.0, 0.0), (jax.random.split(key, ys.shape[0]), ys, locs))
        return -total

    def cold(fn, argnums, *args):
        """Trace, lower and compile a fresh wrapper (no cache hit): seconds."""
        start = time.perf_counter()
        jax.jit(jax.grad(lambda *a: fn(*a), argnums=argnums)).lower(*args).compile()
        return time.perf_counter() - start

    # Cold compiles alternate between the two, median of 5 each: one compile is noise on a
    # shared machine.
    times = {"probgen": [], "hand": []}
    for _ in range(5):
        times["probgen"].append(cold(obj.loss, 3, key, obs, (), (locs,)))
        times["hand"].append(cold(hand, 2, key, jnp.zeros(steps), locs))
    return float(np.median(times["probgen"])), float(np.median(times["hand"]))


# -- autoguides vs NumPyro's ------------------------------------------------------------------


def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    return jnp.asarray(x, jnp.float32), jnp.asarray(data.target, jnp.float32)


SCHOOLS_Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


@pg.gen
def logistic_regression(x):
    w = pg.sample("w", pg.Normal(jnp.zeros(x.shape[1]), 1.0))
    b = pg.sample("b", pg.Normal(0.0, 1.0))
    pg.sample("y", pg.Bernoulli(logits=x @ w + b))


@pg.gen
def eight_schools(sigma):
    mu = pg.sample("mu", pg.Normal(0.0, 5.0))
    tau = pg.sample("tau", pg.dist.HalfCauchy(5.0))
    theta = pg.sample("theta", pg.Normal(mu * jnp.ones(8), tau))
    pg.sample("y", pg.Normal(theta, sigma))


def _numpyro_models():
    import numpyro
    import numpyro.distributions as dist

    def np_logistic_regression(x, y):
        w = numpyro.sample("w", dist.Normal(jnp.zeros(x.shape[1]), 1.0).to_event(1))
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)

    def np_eight_schools(sigma, y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("schools", 8):
            theta = numpyro.sample("theta", dist.Normal(mu, tau))
            numpyro.sample("y", dist.Normal(theta, sigma), obs=y)

    return np_logistic_regression, np_eight_schools


def prepare_autoguide(model, observations, args, family, repeats: int) -> Step:
    """probgen: ``pg.vi.autoguide`` + ``pg.vi.elbo`` (1 particle) + Adam, one jitted step."""
    guide = pg.vi.autoguide(model, observations, *args, family=family)
    objective = pg.vi.elbo(model, guide)
    optimizer = optax.adam(1e-2)
    params = {"guide": guide.init_params(jax.random.key(0))}
    batch = (observations, *args)

    def step(params, state, key):
        value, grads = jax.value_and_grad(objective)(params, key, batch)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    carry = [params, optimizer.init(params)]
    start = time.perf_counter()
    compiled = jax.jit(step).lower(carry[0], carry[1], jax.random.key(1)).compile()
    compile_s = time.perf_counter() - start
    keys = _keys(repeats)

    def call():
        carry[0], carry[1], value = compiled(carry[0], carry[1], next(keys))
        return carry[0], value

    return Step(call, compile_s, float("nan"))


def prepare_numpyro_autoguide(np_model, args, family) -> Step:
    """NumPyro: ``AutoNormal`` / ``AutoMultivariateNormal`` + ``Trace_ELBO`` + Adam, jitted ``svi.update``."""
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

    guide = (AutoNormal if family == "normal" else AutoMultivariateNormal)(np_model)
    svi = SVI(np_model, guide, numpyro.optim.optax_to_numpyro(optax.adam(1e-2)), Trace_ELBO())
    carry = [svi.init(jax.random.key(0), *args)]
    start = time.perf_counter()
    compiled = jax.jit(svi.update).lower(carry[0], *args).compile()
    compile_s = time.perf_counter() - start

    def call():
        carry[0], value = compiled(carry[0], *args)
        return carry[0], value

    return Step(call, compile_s, float("nan"))


def autoguide_rows(repeats: int) -> list[dict]:
    np_logistic_regression, np_eight_schools = _numpyro_models()
    x, y = _breast_cancer()
    cases = (
        ("logistic regression (breast cancer, D=31)", logistic_regression, {"y": y}, (x,), np_logistic_regression, (x, y)),
        ("eight schools", eight_schools, {"y": SCHOOLS_Y}, (SCHOOLS_SIGMA,), np_eight_schools, (SCHOOLS_SIGMA, SCHOOLS_Y)),
    )
    rows = []
    for case, model, observations, args, np_model, np_args in cases:
        for family, np_name in (("normal", "AutoNormal"), ("mvn", "AutoMultivariateNormal")):
            runs = {"probgen": prepare_autoguide(model, observations, args, family, repeats),
                    "numpyro": prepare_numpyro_autoguide(np_model, np_args, family)}
            t, _ = interleaved_calls({name: run.call for name, run in runs.items()}, repeats)
            rows.append(dict(
                name=f"autoguide {family} SVI step, {case} vs NumPyro {np_name}",
                probgen_s=t["probgen"], baseline_s=t["numpyro"], ratio=t["probgen"] / t["numpyro"],
                notes=f"compile {runs['probgen'].compile_s:.2f}s vs {runs['numpyro'].compile_s:.2f}s; "
                      f"Trace_ELBO 1 particle, Adam; interleaved, {repeats} rounds",
            ))
    return rows


def main(quick: bool = False) -> list[dict]:
    repeats = 50 if quick else 300
    batches = (128,) if quick else (128, 1024)
    rows = []
    x_all = (jax.random.uniform(jax.random.key(3), (1024, DATA_DIM)) < 0.3).astype(jnp.float32)
    for batch in batches:
        x = x_all[:batch]
        for name, objective, hand, np_kind in (
            ("elbo", pg.vi.elbo(model, guide), hand_elbo, "elbo"),
            (f"iwae{PARTICLES}", pg.vi.iwae(model, guide, PARTICLES), hand_iwae, "renyi"),
        ):
            pg_step, optimizer = make_step(probgen_loss(objective))
            hand_step, _ = make_step(hand)
            runs = {"probgen": prepare_step(pg_step, optimizer, x, repeats),
                    "hand": prepare_step(hand_step, optimizer, x, repeats), "numpyro": prepare_numpyro(np_kind, x)}
            t, _ = interleaved_calls({run_name: run.call for run_name, run in runs.items()}, repeats)
            pg_r, hand_r, np_r = runs["probgen"], runs["hand"], runs["numpyro"]
            pg_s, hand_s, np_s = t["probgen"], t["hand"], t["numpyro"]
            rows.append(dict(
                name=f"vae {name} step B={batch} vs hand JAX", probgen_s=pg_s, baseline_s=hand_s,
                ratio=pg_s / hand_s,
                notes=f"compile {pg_r.compile_s:.2f}s vs {hand_r.compile_s:.2f}s; flops ratio {pg_r.flops / hand_r.flops:.3f}",
            ))
            loss_name = "Trace_ELBO" if np_kind == "elbo" else f"RenyiELBO(a=0,K={PARTICLES})"
            rows.append(dict(
                name=f"vae {name} step B={batch} vs NumPyro {loss_name}", probgen_s=pg_s,
                baseline_s=np_s, ratio=pg_s / np_s,
                notes=f"compile {pg_r.compile_s:.2f}s vs {np_r.compile_s:.2f}s; interleaved, {repeats} rounds",
            ))
    for steps in ((10, 100, 1000)):
        pg_s, hand_s = ssm_compile_times(steps)
        rows.append(dict(name=f"ssm ELBO-grad compile T={steps} vs hand lax.scan", probgen_s=pg_s, baseline_s=hand_s,
                         ratio=pg_s / hand_s, notes="compile time (s): trace + lower + XLA, median of 5 cold compiles, alternated"))
    rows += autoguide_rows(repeats)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print_table(main(args.quick), "vi")

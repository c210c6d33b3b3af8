"""Benchmark: probgen particle filter vs a hand-written JAX particle filter (LG-SSM, 100 steps).

Run: ``.venv/bin/python benchmarks/mc.py [--quick]``. ``main(quick)`` returns rows
(name, probgen_s, baseline_s, ratio, notes). Tempered SMC vs Blackjax's adaptive
tempered SMC is in ``benchmarks/mc_tempered.py``.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import probgen as pg

A, Q, R, T = 0.9, 1.0, 0.5, 100


@pg.gen
def lg_step(z, _):
    z = pg.sample("z", pg.Normal(A * z, jnp.sqrt(Q)))
    pg.sample("y", pg.Normal(z, jnp.sqrt(R)))
    return z, None


def hand_pf(key, ys, num_particles):
    def body(carry, inputs):
        z, log_w, log_z = carry
        k, y = inputs
        k_res, k_prop = jax.random.split(k)
        u = (jnp.arange(num_particles) + jax.random.uniform(k_res)) / num_particles
        w = jnp.exp(log_w - jax.scipy.special.logsumexp(log_w))
        idx = jnp.clip(jnp.searchsorted(jnp.cumsum(w), u, side="right"), 0, num_particles - 1)
        z = z[idx]
        z = A * z + jnp.sqrt(Q) * jax.random.normal(k_prop, (num_particles,))
        incr = -0.5 * (jnp.log(2 * jnp.pi * R) + (y - z) ** 2 / R)
        log_z = log_z + jax.scipy.special.logsumexp(log_w + incr) - jax.scipy.special.logsumexp(log_w)
        return (z, jnp.zeros(num_particles), log_z), None

    init = (jnp.zeros(num_particles), jnp.zeros(num_particles), jnp.zeros(()))
    (_, _, log_z), _ = jax.lax.scan(body, init, (jax.random.split(key, ys.shape[0]), ys))
    return log_z


def timed(fn, *args, repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), compile_s


def hand_pf_particle_keys(key, ys, num_particles):
    """The hand-written filter, but each particle draws from its own key (as a GF trace does)."""
    def body(carry, inputs):
        z, log_w, log_z = carry
        k, y = inputs
        k_res, k_prop = jax.random.split(k)
        u = (jnp.arange(num_particles) + jax.random.uniform(k_res)) / num_particles
        w = jnp.exp(log_w - jax.scipy.special.logsumexp(log_w))
        idx = jnp.clip(jnp.searchsorted(jnp.cumsum(w), u), 0, num_particles - 1)
        keys = jax.random.split(k_prop, num_particles)
        noise = jax.vmap(lambda kk: jax.random.normal(jax.random.fold_in(kk, 1)))(keys)
        z = A * z[idx] + jnp.sqrt(Q) * noise
        log_w = -0.5 * (y - z) ** 2 / R - 0.5 * jnp.log(2 * jnp.pi * R)
        return (z, log_w, log_z + jax.scipy.special.logsumexp(log_w) - jnp.log(num_particles)), None

    init = (jnp.zeros(num_particles), jnp.zeros(num_particles), jnp.zeros(()))
    (_, _, log_z), _ = jax.lax.scan(body, init, (jax.random.split(key, ys.shape[0]), ys))
    return log_z


def main(quick: bool = False) -> list[dict]:
    """Particle filter vs hand-written JAX, interleaved timings.

    The probgen filter gives every particle its own key stream (each particle is a GF trace),
    so with the default threefry keys it hashes about 3 times per particle-step where the
    batched hand-written filter hashes 0.5 times; the ``particle keys`` row isolates that
    cost, and the ``unsafe_rbg`` rows show the ratio when key derivation is cheap.
    """
    sys.path.insert(0, __import__("os").path.dirname(__file__))
    from common import compile_seconds, interleaved_seconds

    ys = jnp.asarray(np.random.default_rng(0).normal(size=T), jnp.float32)
    model = pg.scan(lg_step, length=T)
    rows = []
    repeats = 5 if quick else 20
    for n in (1000, 10000):
        pf = pg.mc.particle_filter(model, {"y": ys}, num_particles=n, ess_threshold=1.0)
        # keep="last": like the hand-written filter, no per-step history is stored.
        fns = {
            "probgen": lambda k, pf=pf: pg.run(pf, k, pf.init(0.0), T)[0].log_evidence,
            "hand": lambda k, n=n: hand_pf(k, ys, n),
            "hand_keys": lambda k, n=n: hand_pf_particle_keys(k, ys, n),
        }
        for impl in ("threefry2x32", "unsafe_rbg"):
            key = jax.random.key(0, impl=impl)
            t = interleaved_seconds(fns, key, repeats=repeats)
            compile_note = ""
            if impl == "threefry2x32":
                compile_note = (f"compile probgen {compile_seconds(fns['probgen'], key):.2f}s, "
                                f"hand {compile_seconds(fns['hand'], key):.2f}s; ")
            rows.append(dict(name=f"particle_filter T={T} N={n} [{impl}]", probgen_s=t["probgen"],
                             baseline_s=t["hand"], ratio=t["probgen"] / t["hand"],
                             notes=compile_note + f"hand with per-particle keys: ratio "
                                   f"{t['probgen'] / t['hand_keys']:.2f}; always resample, systematic"))
    return rows


if __name__ == "__main__":
    out = main(quick="--quick" in sys.argv)
    print(f"{'name':34s} {'probgen_s':>10s} {'baseline_s':>10s} {'ratio':>6s}  notes")
    for r in out:
        print(f"{r['name']:34s} {r['probgen_s']:10.4f} {r['baseline_s']:10.4f} {r['ratio']:6.2f}  {r['notes']}")

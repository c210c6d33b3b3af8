"""Benchmark: probgen particle filter vs a hand-written JAX particle filter (LG-SSM, 100 steps).

Run: ``.venv/bin/python benchmarks/mc.py [--quick]``. ``main(quick)`` returns rows
(name, probgen_s, baseline_s, ratio, notes). The tempered-SMC vs blackjax comparison
named in issue 9 is not built yet (blackjax 1.7.1 installs cleanly).
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


def main(quick: bool = False) -> list[dict]:
    ys = jnp.asarray(np.random.default_rng(0).normal(size=T), jnp.float32)
    model = pg.scan(lg_step, length=T)
    rows = []
    for n in (1000, 10000):
        pf = pg.mc.particle_filter(model, {"y": ys}, 0.0, num_particles=n, ess_threshold=1.0)
        # keep="last": like the hand-written filter, no per-step history is stored.
        pg_fn = jax.jit(lambda k, pf=pf: pg.run(pf, k, pf.init(), T)[0].log_evidence)
        hand_fn = jax.jit(lambda k, n=n: hand_pf(k, ys, n))
        repeats = 3 if quick else 10
        p, pc = timed(pg_fn, jax.random.key(0), repeats=repeats)
        b, bc = timed(hand_fn, jax.random.key(0), repeats=repeats)
        rows.append(dict(name=f"particle_filter T={T} N={n}", probgen_s=p, baseline_s=b, ratio=p / b,
                         notes=f"compile probgen {pc:.2f}s, hand {bc:.2f}s; always resample, systematic"))
    return rows


if __name__ == "__main__":
    out = main(quick="--quick" in sys.argv)
    print(f"{'name':34s} {'probgen_s':>10s} {'baseline_s':>10s} {'ratio':>6s}  notes")
    for r in out:
        print(f"{r['name']:34s} {r['probgen_s']:10.4f} {r['baseline_s']:10.4f} {r['ratio']:6.2f}  {r['notes']}")

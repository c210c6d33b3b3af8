"""Benchmark probgen.train: fit vs hand-written optax loops; sweep vs sequential runs.

Run ``python benchmarks/train.py [--quick]``. Rows report the median wall time of
several timed runs after a warm-up (``block_until_ready``), the ratio probgen / baseline,
and compile (first-call) times in the notes.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import probgen as pg

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved_calls, print_table  # noqa: E402


def _data(num_examples=512, dim=16):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_examples, dim)).astype(np.float32)
    y = (x @ rng.normal(size=dim) + 0.1 * rng.normal(size=num_examples)).astype(np.float32)
    return {"x": jnp.asarray(x), "y": jnp.asarray(y)}


def _init(dim=16, hidden=32):
    rng = np.random.default_rng(1)
    return {
        "w1": jnp.asarray(rng.normal(size=(dim, hidden)).astype(np.float32) / 4),
        "w2": jnp.asarray(rng.normal(size=(hidden,)).astype(np.float32) / 6),
    }


def loss_fn(params, key, batch):
    hidden = jnp.tanh(batch["x"] @ params["w1"])
    return jnp.mean((hidden @ params["w2"] - batch["y"]) ** 2)


def _batch(data, key, step, batch_size):
    idx = jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, data["x"].shape[0])
    return jax.tree.map(lambda a: a[idx], data)


def main(quick: bool = False) -> list[dict]:
    steps = 2000
    batch_size = 64
    repeats = 5 if quick else 15
    data = _data()
    params = _init()
    optimizer = optax.adam(1e-2)
    key = jax.random.key(0)
    rows = []

    def run_fit(chunk_size=500):
        return pg.train.fit(loss_fn, params, optimizer, key, data=data, steps=steps, batch_size=batch_size,
                            batching="random", chunk_size=chunk_size, progress=False).params

    @jax.jit
    def python_loop_step(params, opt_state, step):
        batch = _batch(data, key, step, batch_size)
        grads = jax.grad(loss_fn)(params, jax.random.fold_in(key, step), batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def run_python_loop():
        p, s = params, optimizer.init(params)
        for step in range(steps):
            p, s = python_loop_step(p, s, step)
        return p

    @jax.jit
    def scan_loop(params):
        def body(carry, step):
            p, s = carry
            batch = _batch(data, key, step, batch_size)
            grads = jax.grad(loss_fn)(p, jax.random.fold_in(key, step), batch)
            updates, s = optimizer.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        (p, _), _ = jax.lax.scan(body, (params, optimizer.init(params)), jnp.arange(steps))
        return p

    @jax.jit
    def guarded_scan_loop(params):
        """The hand-written scan plus fit's NaN guard: finite check, state frozen after a bad step."""
        def body(carry, step):
            p, s, ok = carry
            batch = _batch(data, key, step, batch_size)
            loss, grads = jax.value_and_grad(loss_fn)(p, jax.random.fold_in(key, step), batch)
            updates, s_new = optimizer.update(grads, s, p)
            p_new = optax.apply_updates(p, updates)
            ok = ok & jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
            p, s = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (p_new, s_new), (p, s))
            return (p, s, ok), loss

        (p, _, _), _ = jax.lax.scan(body, (params, optimizer.init(params), jnp.bool_(True)), jnp.arange(steps))
        return p

    t, first = interleaved_calls({"guarded_scan": lambda: guarded_scan_loop(params), "fit": run_fit,
                                  "fit_one_chunk": lambda: run_fit(steps), "loop": run_python_loop,
                                  "scan": lambda: scan_loop(params)}, repeats)
    (fit_s, fit_c), (one_s, one_c), (loop_s, loop_c), (scan_s, scan_c) = (
        (t[n], first[n]) for n in ("fit", "fit_one_chunk", "loop", "scan"))
    rows.append(dict(name="fit 2000 steps vs jitted step in Python loop", probgen_s=fit_s, baseline_s=loop_s,
                     ratio=fit_s / loop_s, notes=f"compile+first: fit {fit_c:.2f}s, loop {loop_c:.2f}s"))
    rows.append(dict(name="fit 2000 steps vs hand-written lax.scan", probgen_s=fit_s, baseline_s=scan_s,
                     ratio=fit_s / scan_s, notes=f"compile+first: fit {fit_c:.2f}s, scan {scan_c:.2f}s; "
                                                  "4 chunks of 500 (one host sync each: NaN check, history)"))
    rows.append(dict(name="fit 2000 steps, one chunk, vs hand-written lax.scan", probgen_s=one_s,
                     baseline_s=scan_s, ratio=one_s / scan_s,
                     notes=f"chunk_size=2000; compile+first: fit {one_c:.2f}s"))
    guard_s = t["guarded_scan"]
    rows.append(dict(name="fit 2000 steps, one chunk, vs lax.scan with fit's NaN guard", probgen_s=one_s,
                     baseline_s=guard_s, ratio=one_s / guard_s,
                     notes="hand scan + per-step isfinite of loss and grads, state frozen after a bad step"))

    sweep_steps = 200 if quick else 500
    learning_rates = np.geomspace(1e-3, 1e-1, 8)

    def train(learning_rate, seed):
        opt = optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)
        return pg.train.fit(loss_fn, params, opt, jax.random.key(seed), data=data, steps=sweep_steps,
                            batch_size=batch_size, batching="random").params

    def run_sweep():
        return pg.train.sweep(train, learning_rate=learning_rates, seed=[0, 1]).results

    single = jax.jit(train)

    def run_sequential():
        return [single(jnp.float32(lr), jnp.int32(seed)) for lr in learning_rates for seed in (0, 1)]

    t, first = interleaved_calls({"sweep": run_sweep, "sequential": run_sequential}, repeats)
    (sweep_s, sweep_c), (seq_s, seq_c) = (t["sweep"], first["sweep"]), (t["sequential"], first["sequential"])
    rows.append(dict(name=f"sweep 16 configs x {sweep_steps} steps vs 16 sequential jitted runs",
                     probgen_s=sweep_s, baseline_s=seq_s, ratio=sweep_s / seq_s,
                     notes=f"compile+first: sweep {sweep_c:.2f}s, sequential {seq_c:.2f}s; "
                           f"{jax.device_count()} {jax.devices()[0].platform} device(s)"))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print_table(main(parser.parse_args().quick), "train")

"""Overhead of the modeling language: probgen vs the same computation hand-written in JAX.

Cases: simulate + assess of a 64-site model; simulate + assess of a 1,000-step scan
state-space model. Reports run-time and compile-time ratios (probgen / hand-written).

    .venv/bin/python benchmarks/core_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpyro.distributions as nd

sys.path.insert(0, os.path.dirname(__file__))
from common import compile_seconds, interleaved_seconds, print_table  # noqa: E402

import probgen as pg  # noqa: E402

NUM_SITES = 64


@pg.gen
def wide_model(mu):
    total = 0.0
    for i in range(NUM_SITES):
        total = total + pg.sample(f"z{i}", pg.Normal(mu + 0.01 * i, 1.0))
    return total


def wide_probgen(key, mu):
    tr = wide_model.simulate(key, mu)
    logp, _ = wide_model.assess(tr.choices, mu)
    return tr.score + logp


def wide_hand(key, mu):
    score, values = 0.0, []
    for i in range(NUM_SITES):
        z = mu + 0.01 * i + jax.random.normal(jax.random.fold_in(key, i + 1))
        values.append(z)
        score = score + nd.Normal(mu + 0.01 * i, 1.0).log_prob(z)
    logp = sum(nd.Normal(mu + 0.01 * i, 1.0).log_prob(v) for i, v in enumerate(values))
    return score + logp


@pg.gen
def ssm_step(z, _):
    z = pg.sample("z", pg.Normal(0.9 * z, 1.0))
    pg.sample("y", pg.Normal(z, 0.5))
    return z, None


def make_ssm(T):
    model = pg.scan(ssm_step, length=T)

    def probgen_fn(key, z0):
        tr = model.simulate(key, z0, None)
        logp, _ = model.assess(tr.choices, z0, None)
        return tr.score + logp

    def hand_fn(key, z0):
        def body(z, k):
            k1, k2 = jax.random.split(k)
            z_new = 0.9 * z + jax.random.normal(k1)
            y = z_new + 0.5 * jax.random.normal(k2)
            lp = nd.Normal(0.9 * z, 1.0).log_prob(z_new) + nd.Normal(z_new, 0.5).log_prob(y)
            return z_new, (z_new, y, lp)

        _, (zs, ys, lps) = jax.lax.scan(body, z0, jax.random.split(key, T))
        zprev = jnp.concatenate([jnp.array([z0]), zs[:-1]])
        logp = jnp.sum(nd.Normal(0.9 * zprev, 1.0).log_prob(zs) + nd.Normal(zs, 0.5).log_prob(ys))
        return jnp.sum(lps) + logp

    return probgen_fn, hand_fn


def main(quick: bool = False) -> list[dict]:
    repeats = 10 if quick else 50
    key = jax.random.key(0)
    rows = []
    cases = [("64-site simulate+assess", wide_probgen, wide_hand, (key, 0.5))]
    for T in (10, 1000):
        p, h = make_ssm(T)
        cases.append((f"scan T={T} simulate+assess", p, h, (key, 0.0)))
    for name, p, h, args in cases:
        times = interleaved_seconds({"probgen": p, "hand": h}, *args, repeats=repeats)
        cp, ch = compile_seconds(p, *args), compile_seconds(h, *args)
        rows.append({
            "case": name,
            "probgen_s": times["probgen"],
            "hand_s": times["hand"],
            "run_ratio": times["probgen"] / times["hand"],
            "compile_probgen_s": cp,
            "compile_hand_s": ch,
            "compile_ratio": cp / ch,
        })
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    rows = main(parser.parse_args().quick)
    print_table(rows, "core overhead: probgen vs hand-written JAX")

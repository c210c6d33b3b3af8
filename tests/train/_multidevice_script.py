"""Run in a subprocess with 4 forced host devices (XLA_FLAGS set before jax starts)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

import probgen as pg

from conftest import init_params, make_regression_data, regression_loss  # noqa: E402

assert jax.device_count() == 4, jax.devices()
data = make_regression_data()
settings = dict(data=data, steps=60, batch_size=16, chunk_size=30, progress=False)
single = pg.train.fit(regression_loss, init_params(), optax.adam(0.05), jax.random.key(0),
                      mesh=pg.train.make_mesh("data", jax.devices()[:1]), **settings)
sharded = pg.train.fit(regression_loss, init_params(), optax.adam(0.05), jax.random.key(0),
                       mesh=pg.train.make_mesh("data"), **settings)
plain = pg.train.fit(regression_loss, init_params(), optax.adam(0.05), jax.random.key(0), **settings)

mesh = pg.train.make_mesh("sweep")


def train(learning_rate, seed):
    optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
    return pg.train.fit(regression_loss, init_params(), optimizer, jax.random.key(seed), data=data,
                        steps=20, batch_size=16)


swept = pg.train.sweep(train, mesh=mesh, axis_name="sweep", learning_rate=[0.01, 0.02, 0.05, 0.1], seed=[0, 1])
unsharded = pg.train.sweep(train, learning_rate=[0.01, 0.02, 0.05, 0.1], seed=[0, 1])

# Particle-parallel importance sampling: posterior mean of a conjugate normal model.
particles_mesh = pg.train.make_mesh("particles")
num_particles = 4096


def self_normalized_mean(z):
    log_weight = jax.scipy.stats.norm.logpdf(1.0, z, 1.0)  # prior N(0,1), y=1 observed
    weights = jax.nn.softmax(log_weight)
    return jnp.sum(weights * z)


def resampled_mean(z):
    # One importance-resampling step: weight, draw ancestors (a cross-device gather), average.
    log_weight = jax.scipy.stats.norm.logpdf(1.0, z, 1.0)
    ancestors = pg.mc.resample(jax.random.key(2), log_weight, scheme="systematic")
    return jnp.mean(z[ancestors])


posterior_resampled = jax.jit(lambda z: resampled_mean(pg.train.constrain_leading(z, particles_mesh)))
posterior_mean = jax.jit(lambda z: self_normalized_mean(pg.train.constrain_leading(z, particles_mesh)))


# Particle-parallel particle filter: the same key must give the same log Z on 1 device or 4
# (per-particle keys, and fixed-order sums in resampling: XLA's own sums and cumsums add in
# another order once sharded, which used to flip an ancestor and send the run elsewhere).
@pg.gen
def ar_step(z, _):
    z = pg.sample("z", pg.Normal(0.9 * z, 1.0))
    pg.sample("y", pg.Normal(z, 0.7))
    return z, None


num_steps = 100
observed = jnp.asarray(np.random.default_rng(0).normal(size=num_steps) * 2.0, jnp.float32)


def filter_log_z(scheme, threshold, shard):
    pf = pg.mc.particle_filter(pg.scan(ar_step, length=num_steps), {"y": observed}, num_particles=1024,
                               scheme=scheme, ess_threshold=threshold)
    state = pf.init(0.0)
    if shard:  # the particle axes; the scalar evidence and step index stay replicated
        state = state._replace(**{name: pg.train.shard_leading(getattr(state, name), particles_mesh)
                                  for name in ("carry", "choices", "log_weights")})
    final = jax.jit(lambda key, s: pg.run(pf, key, s, num_steps)[0])(jax.random.key(5), state)
    return float(final.log_evidence), len(final.log_weights.sharding.device_set)


filters = {f"{scheme}-{threshold}": {"single": filter_log_z(scheme, threshold, False),
                                     "sharded": filter_log_z(scheme, threshold, True)}
           for scheme, threshold in [("systematic", 0.5), ("systematic", 1.0), ("multinomial", 1.0),
                                     ("stratified", 0.5), ("residual", 0.5)]}

z = jax.random.normal(jax.random.key(1), (num_particles,))
z_sharded = pg.train.shard_leading(z, particles_mesh)
report = {
    "params_single": np.asarray(single.params["w"]).tolist(),
    "params_sharded": np.asarray(sharded.params["w"]).tolist(),
    "params_plain": np.asarray(plain.params["w"]).tolist(),
    "loss_single": np.asarray(single.history["loss"]).tolist(),
    "loss_sharded": np.asarray(sharded.history["loss"]).tolist(),
    "data_devices": len(sharded.params["w"].sharding.device_set),
    "sweep_devices": len(swept.results.params["w"].sharding.device_set),
    "sweep_shard_shape": list(swept.results.params["w"].sharding.shard_shape((8, 3))),
    "sweep_sharded_w": np.asarray(swept.results.params["w"]).tolist(),
    "sweep_unsharded_w": np.asarray(unsharded.results.params["w"]).tolist(),
    "particle_devices": len(z_sharded.sharding.device_set),
    "is_mean_sharded": float(posterior_mean(z_sharded)),
    "resampled_sharded": float(posterior_resampled(z_sharded)),
    "resampled_single": float(jax.jit(resampled_mean)(jax.device_put(z, jax.devices()[0]))),
    "is_mean_single": float(jax.jit(self_normalized_mean)(jax.device_put(z, jax.devices()[0]))),
    "filters": filters,
}
print("RESULT" + json.dumps(report))

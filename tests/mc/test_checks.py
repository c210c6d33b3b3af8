"""Static counts and settings of every sampler: any integer scalar type is fine, anything else
is a SettingError naming the argument (no silent truncation of 2.5, no bool, no traced array)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg
from tests.mc.lgssm import lg_step

OBS = {"y": jnp.zeros(5)}


@pg.gen
def static_model():
    z = pg.sample("z", pg.Normal(0.0, 1.0))
    pg.sample("x", pg.Normal(z, 1.0))


SAMPLERS = {
    "importance_sampling": lambda n: pg.mc.importance_sampling(jax.random.key(0), static_model, {"x": 0.5},
                                                               num_particles=n).log_weights,
    "particle_filter": lambda n: pg.mc.particle_filter(pg.scan(lg_step, length=5), OBS,
                                                       num_particles=n).init(0.0).log_weights,
    "smc": lambda n: pg.mc.smc(jax.random.key(0), pg.scan(lg_step, length=5), OBS, 0.0, num_particles=n,
                               keep="last").final.log_weights,
    "tempered_smc": lambda n: pg.mc.tempered_smc_kernel(static_model, {"x": 0.5}, num_particles=n).init(
        jax.vmap(static_model.simulate)(jax.random.split(jax.random.key(0), n)).choices).log_weights,
    "smc_objective": lambda n: jnp.zeros(10) + pg.mc.smc_objective(
        lambda p: (pg.scan(lg_step, length=5), 0.0, None), OBS, num_particles=n)(None, jax.random.key(0)),
}


@pytest.mark.parametrize("count", [np.int64(10), np.int32(10), 10])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_any_integer_scalar_is_a_particle_count(sampler, count):
    # np.int64(10) used to be refused as "not a positive int".
    assert SAMPLERS[sampler](count).shape == (10,)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, jnp.asarray(10), None])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_anything_else_is_a_setting_error_naming_num_particles(sampler, bad):
    with pytest.raises(pg.SettingError, match=f"{sampler}: num_particles must be a positive int"):
        SAMPLERS[sampler](bad)


def test_particle_filter_settings():
    model = pg.scan(lg_step, length=5)
    with pytest.raises(pg.SettingError, match="num_rejuvenation_steps"):
        pg.mc.particle_filter(model, OBS, num_particles=4, rejuvenation=pg.mc.mh(pg.select("z")),
                              num_rejuvenation_steps=np.float64(2.0))
    with pytest.raises(pg.SettingError, match="unknown resampling scheme"):
        pg.mc.particle_filter(model, OBS, num_particles=4, scheme="Systematic")
    with pytest.raises(pg.SettingError, match="smc_objective: ess_threshold must lie in"):
        pg.mc.smc_objective(lambda p: (model, 0.0, None), OBS, num_particles=4, ess_threshold=2.0)
    pf = pg.mc.particle_filter(model, OBS, num_particles=np.int64(4), rejuvenation=pg.mc.mh(pg.select("z")),
                               num_rejuvenation_steps=np.int32(2))
    assert pg.run(pf, jax.random.key(0), pf.init(0.0), 5)[0].log_weights.shape == (4,)


def test_bad_arguments_are_probgen_errors_of_the_right_kind():
    model = pg.scan(lg_step, length=5)
    with pytest.raises(pg.ArgumentError, match="importance_sampling: model must be a generative function"):
        pg.mc.importance_sampling(jax.random.key(0), lambda: None, {"x": 0.5}, num_particles=4)
    with pytest.raises(pg.ArgumentError, match="smc: model must be a pg.scan"):
        pg.mc.smc(jax.random.key(0), lg_step, OBS, 0.0, num_particles=4)
    with pytest.raises(pg.ArgumentError, match="particle_filter: rejuvenation must be a pg.Kernel"):
        pg.mc.particle_filter(model, OBS, num_particles=4, rejuvenation=lambda k, t: t)
    with pytest.raises(pg.ConstraintError, match="particle_filter: observations at 'y' need a leading time axis"):
        pg.mc.particle_filter(model, {"y": jnp.zeros(3)}, num_particles=4)

    @pg.gen
    def proposes_y():
        pg.sample("z", pg.Normal(0.0, 1.0))
        pg.sample("x", pg.Normal(0.0, 1.0))

    with pytest.raises(pg.AddressError, match="importance_sampling: proposal proposes_y proposes observed address"):
        pg.mc.importance_sampling(jax.random.key(0), static_model, {"x": 0.5}, num_particles=4, proposal=proposes_y)

    @pg.gen
    def coin():
        pg.sample("heads", pg.Bernoulli(probs=0.5))
        pg.sample("x", pg.Normal(0.0, 1.0))

    with pytest.raises(pg.ArgumentError, match="tempered_smc: latent address 'heads'.*continuous"):
        pg.mc.tempered_smc_kernel(coin, {"x": 0.5}, num_particles=4)
    with pytest.raises(pg.SettingError, match="tempered_smc: .* has no latent choices"):
        pg.mc.tempered_smc_kernel(static_model, {"x": 0.5, "z": 0.0}, num_particles=4)

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probgen as pg
import probgen.train.fitting as fit_module
from probgen.train import CheckpointError, CheckpointMismatchError

from .conftest import ADAM, assert_trees_bitwise_equal, init_params, regression_loss

# orbax leaves tensorstore futures behind when it fails to read a corrupted file; they
# complain about a closed event loop when garbage-collected. Harmless here.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

SETTINGS = dict(batch_size=12, chunk_size=20, progress=False)


@pytest.fixture(scope="module")
def uninterrupted(data):
    return pg.train.fit(regression_loss, init_params(), ADAM, jax.random.key(7), data=data, steps=100, **SETTINGS)


def test_resume_from_step_50_is_bitwise_identical(tmp_path, data, uninterrupted):
    first = pg.train.fit(regression_loss, init_params(), ADAM, jax.random.key(7), data=data, steps=50,
                         checkpoint_dir=tmp_path, checkpoint_every=25, **SETTINGS)
    assert pg.train.latest_step(tmp_path) == 50
    assert not np.array_equal(first.params["w"], uninterrupted.params["w"])
    resumed = pg.train.resume(regression_loss, init_params(), ADAM, tmp_path, data=data, steps=100, **SETTINGS)
    assert_trees_bitwise_equal(resumed, uninterrupted)
    assert resumed.history["loss"].shape == (100,)
    assert pg.train.latest_step(tmp_path) == 100


def test_resume_with_other_batch_settings_is_refused(tmp_path, data):
    pg.train.fit(regression_loss, init_params(), ADAM, jax.random.key(7), data=data, steps=20,
                 checkpoint_dir=tmp_path, **SETTINGS)
    with pytest.raises(CheckpointMismatchError, match="batch_size: saved 12, now 8"):
        pg.train.resume(regression_loss, init_params(), ADAM, tmp_path, data=data, steps=40,
                        batch_size=8, progress=False)
    with pytest.raises(CheckpointMismatchError, match=r"\['params'\]\['w'\]"):
        params = {"w": jnp.zeros(4), "b": jnp.zeros(())}
        pg.train.resume(regression_loss, params, ADAM, tmp_path, data=data, steps=40, **SETTINGS)


def test_checkpoint_holds_state_key_step_and_history(tmp_path, data):
    result = pg.train.fit(regression_loss, init_params(), ADAM, jax.random.key(7), data=data, steps=40,
                          checkpoint_dir=tmp_path, checkpoint_every=20, max_to_keep=None, **SETTINGS)
    state, history = pg.train.restore_checkpoint(tmp_path, init_params(), ADAM.init(init_params()), step=20)
    assert int(state.step) == 20
    np.testing.assert_array_equal(history["loss"], result.history["loss"][:20])
    assert_trees_bitwise_equal(state.key, jax.random.key(7))
    state, history = pg.train.restore_checkpoint(tmp_path, init_params(), ADAM.init(init_params()))
    assert_trees_bitwise_equal(state, result.state)
    assert set(history) == {"loss", "w_norm"}


def test_interrupt_saves_and_resume_continues_bitwise(tmp_path, data, uninterrupted, monkeypatch):
    calls = {"n": 0}
    real_chunk = fit_module._jit_chunk

    def interrupted_chunk(*args):
        calls["n"] += 1
        if calls["n"] == 3:  # Ctrl-C during the third chunk (steps 40..59)
            raise KeyboardInterrupt
        return real_chunk(*args)

    monkeypatch.setattr(fit_module, "_jit_chunk", interrupted_chunk)
    with pytest.raises(KeyboardInterrupt):
        pg.train.fit(regression_loss, init_params(), ADAM, jax.random.key(7), data=data, steps=100,
                     checkpoint_dir=tmp_path, checkpoint_every=100, **SETTINGS)
    monkeypatch.setattr(fit_module, "_jit_chunk", real_chunk)
    assert pg.train.latest_step(tmp_path) == 40
    resumed = pg.train.resume(regression_loss, init_params(), ADAM, tmp_path, data=data, steps=100, **SETTINGS)
    assert_trees_bitwise_equal(resumed, uninterrupted)


@pytest.fixture()
def saved(tmp_path):
    params = {"w": jnp.arange(3.0), "b": jnp.ones(())}
    state = pg.train.FitState(params, ADAM.init(params), jnp.int32(5), jax.random.key(1))
    pg.train.save_checkpoint(tmp_path, state, {"loss": jnp.arange(5.0)})
    return tmp_path


def test_mismatched_shapes_name_the_leaf(saved):
    params = {"w": jnp.zeros(4), "b": jnp.zeros(())}
    with pytest.raises(CheckpointMismatchError, match=r"\['params'\]\['w'\].*\(3,\).*\(4,\)"):
        pg.train.restore_checkpoint(saved, params, ADAM.init(params))


def test_mismatched_structure_and_optimizer(saved):
    params = {"w": jnp.zeros(3), "bias": jnp.zeros(())}
    with pytest.raises(CheckpointMismatchError, match="bias"):
        pg.train.restore_checkpoint(saved, params, ADAM.init(params))
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    sgd = optax.sgd(0.1, momentum=0.9)
    with pytest.raises(CheckpointMismatchError, match="does not match"):
        pg.train.restore_checkpoint(saved, params, sgd.init(params))
    with pytest.raises(CheckpointMismatchError, match="float32"):
        params16 = {"w": jnp.zeros(3, jnp.bfloat16), "b": jnp.zeros(())}
        pg.train.restore_checkpoint(saved, params16, ADAM.init(params16))


def _overwrite_array_files(folder):
    hit = 0
    for root, _, files in os.walk(os.path.join(folder, "5", "leaves")):
        if os.path.basename(root) == "d":
            for name in files:
                path = os.path.join(root, name)
                size = os.path.getsize(path)
                with open(path, "r+b") as handle:
                    handle.write(b"\x5a" * size)
                hit += 1
    assert hit


def test_corrupted_checkpoint_raises(saved):
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    _overwrite_array_files(saved)
    with pytest.raises(CheckpointError, match="step 5"):
        pg.train.restore_checkpoint(saved, params, ADAM.init(params))


def test_bytes_that_differ_from_the_digest_raise(saved):
    # Arrays that decode fine but are not the bytes written (e.g. a file swapped in from
    # another run) are caught by the SHA-256 digests in the manifest.
    import json

    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    path = os.path.join(saved, "5", "manifest", "metadata")
    with open(path) as handle:
        manifest = json.load(handle)
    manifest["sha256"][0] = "0" * 64
    with open(path, "w") as handle:
        json.dump(manifest, handle)
    with pytest.raises(CheckpointError, match=r"corrupted: the bytes of \['key'\]"):
        pg.train.restore_checkpoint(saved, params, ADAM.init(params))


def test_missing_pieces_raise(saved, tmp_path_factory):
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        pg.train.restore_checkpoint(tmp_path_factory.mktemp("x") / "nothing", params, ADAM.init(params))
    with pytest.raises(CheckpointError, match="no checkpoint saved"):
        pg.train.restore_checkpoint(tmp_path_factory.mktemp("empty"), params, ADAM.init(params))
    with pytest.raises(CheckpointError, match="no checkpoint for step 3"):
        pg.train.restore_checkpoint(saved, params, ADAM.init(params), step=3)
    os.remove(os.path.join(saved, "5", "manifest", "metadata"))
    with pytest.raises(CheckpointError, match="manifest"):
        pg.train.restore_checkpoint(saved, params, ADAM.init(params))

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probgen as pg
import probgen.train.fitting as fit_module
from probgen.core.errors import SettingError
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
    real_compiled = fit_module._compiled_chunk

    def interrupted_program(*parts):
        program = real_compiled(*parts)

        def run_chunk(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:  # Ctrl-C during the third chunk (steps 40..59)
                raise KeyboardInterrupt
            return program(*args, **kwargs)

        return run_chunk

    monkeypatch.setattr(fit_module, "_compiled_chunk", interrupted_program)
    with pytest.raises(KeyboardInterrupt):
        pg.train.fit(regression_loss, init_params(), ADAM, jax.random.key(7), data=data, steps=100,
                     checkpoint_dir=tmp_path, checkpoint_every=100, **SETTINGS)
    monkeypatch.undo()
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
    saved_dtype = str(jnp.arange(3.0).dtype)  # float32, or float64 under JAX_ENABLE_X64
    with pytest.raises(CheckpointMismatchError, match=rf"\['params'\]\['w'\].*{saved_dtype}.*bfloat16"):
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


# --- a checkpoint folder belongs to one run ---------------------------------------------------


def _forbid_training(monkeypatch):
    """Fail the test if any training step runs (the checks must come first)."""

    def refuse(*parts):
        raise AssertionError("a training chunk ran before the checkpoint folder was checked")

    monkeypatch.setattr(fit_module, "_compiled_chunk", refuse)


@pytest.fixture()
def no_training(monkeypatch):
    _forbid_training(monkeypatch)


def _fit_into(folder, data, steps=20, optimizer=ADAM, **extra):
    settings = {**SETTINGS, **extra}
    return pg.train.fit(regression_loss, init_params(), optimizer, jax.random.key(7), data=data, steps=steps,
                        checkpoint_dir=folder, **settings)


def test_second_run_into_a_used_folder_is_refused_before_training(tmp_path, data, monkeypatch):
    _fit_into(tmp_path, data)
    saved = sorted(os.listdir(tmp_path))
    _forbid_training(monkeypatch)
    # Before: the whole run trained, then orbax raised StepAlreadyExistsError at step 20.
    with pytest.raises(SettingError, match=rf"checkpoint_dir '{tmp_path}' is not empty.*step 20.*resume"):
        _fit_into(tmp_path, data)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("")
    with pytest.raises(SettingError, match=r"not empty \(it holds \['notes.txt'\]\)"):
        _fit_into(other, data)
    assert sorted(os.listdir(tmp_path)) == sorted(saved + ["notes.txt", "other"])


def test_unwritable_folders_are_refused_before_training(tmp_path, data, no_training):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(SettingError, match="is a file, not a folder"):
        _fit_into(afile, data)
    with pytest.raises(SettingError, match=r"checkpoint_dir .*afile/run' cannot be written"):
        _fit_into(afile / "run", data)  # a folder under a file can never be created


def _read_only_folder(path):
    """``path`` made read-only; skips the test where that is not enforced (root, os.geteuid() == 0)."""
    path.mkdir(exist_ok=True)
    path.chmod(0o555)
    try:
        (path / "probe").mkdir()
    except PermissionError:
        return path
    (path / "probe").rmdir()
    path.chmod(0o755)
    pytest.skip("read-only folders are writable here (running as root); see the under-a-file test")


def test_read_only_folder_is_refused_before_training(tmp_path, data, no_training):
    folder = _read_only_folder(tmp_path / "locked")
    try:
        with pytest.raises(SettingError, match="cannot be written"):
            _fit_into(folder, data)
        with pytest.raises(SettingError, match="cannot be written"):
            _fit_into(folder / "run", data)  # unwritable parent
    finally:
        folder.chmod(0o755)


def test_resume_into_read_only_folder_is_refused_before_training(tmp_path, data, monkeypatch):
    _fit_into(tmp_path / "run", data)
    _read_only_folder(tmp_path / "run")
    _forbid_training(monkeypatch)
    try:
        with pytest.raises(SettingError, match="cannot be written"):
            pg.train.resume(regression_loss, init_params(), ADAM, tmp_path / "run", data=data, steps=40, **SETTINGS)
    finally:
        (tmp_path / "run").chmod(0o755)


def test_resume_from_an_earlier_step_is_refused_before_training(tmp_path, data, monkeypatch):
    _fit_into(tmp_path, data, steps=40, checkpoint_every=20, max_to_keep=None)
    _forbid_training(monkeypatch)
    # Before: steps 20..40 ran again, then saving step 40 raised StepAlreadyExistsError.
    with pytest.raises(SettingError, match=r"step=20 is not the latest checkpoint.*\[40\]"):
        pg.train.resume(regression_loss, init_params(), ADAM, tmp_path, data=data, steps=40, step=20, **SETTINGS)
    with pytest.raises(SettingError, match="at step 40, past steps=30"):
        pg.train.resume(regression_loss, init_params(), ADAM, tmp_path, data=data, steps=30, **SETTINGS)


def _shifted_loss(params, key, batch):
    loss, metrics = regression_loss(params, key, batch)
    return loss + 0.01 * jnp.sum(params["w"]), metrics


def _scaled_loss(scale):
    def loss(params, key, batch):
        value, metrics = regression_loss(params, key, batch)
        return scale * value, metrics

    return loss


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(optimizer=optax.adam(0.1)), "optimizer"),  # same state structure, other rate
        (dict(optimizer=optax.adam(0.05, b1=0.8)), "optimizer"),
        (dict(loss_fn=_shifted_loss), "loss_fn"),  # other code
        (dict(loss_fn=_scaled_loss(2.0)), "loss_fn"),  # same code, other closed-over value
        (dict(data_transform=lambda d: {**d, "z": d["y"]}), "data"),
    ],
)
def test_resume_refuses_a_different_run(tmp_path, data, change, named):
    # Before: resume silently continued the saved run with the new loss or optimizer.
    original = dict(loss_fn=_scaled_loss(1.0), optimizer=optax.adam(0.05))
    pg.train.fit(original["loss_fn"], init_params(), original["optimizer"], jax.random.key(7), data=data,
                 steps=20, checkpoint_dir=tmp_path, **SETTINGS)
    settings = {**original, **{k: v for k, v in change.items() if k != "data_transform"}}
    new_data = change.get("data_transform", lambda d: d)(data)

    def resume():
        return pg.train.resume(settings["loss_fn"], init_params(), settings["optimizer"], tmp_path,
                               data=new_data, steps=30, **SETTINGS)

    with pytest.raises(CheckpointMismatchError, match=rf"other settings \({named}: saved"):
        resume()
    assert pg.train.latest_step(tmp_path) == 20


def test_resume_with_a_rebuilt_optimizer_and_loss_is_bitwise(tmp_path, data, uninterrupted):
    pg.train.fit(_scaled_loss(1.0), init_params(), optax.adam(0.05), jax.random.key(7), data=data, steps=50,
                 checkpoint_dir=tmp_path, **SETTINGS)
    resumed = pg.train.resume(_scaled_loss(1.0), init_params(), optax.adam(0.05), tmp_path, data=data,
                              steps=100, **SETTINGS)
    assert_trees_bitwise_equal(resumed, uninterrupted)


def test_fingerprints_are_the_same_in_a_new_process():
    script = (
        "import optax, probgen.train.fitting as f; from tests.train.conftest import regression_loss; "
        "print(f._fingerprint(optax.adam(0.05)), f._fingerprint(regression_loss))"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.returncode == 0, out.stderr[-2000:]
    expected = f"{fit_module._fingerprint(optax.adam(0.05))} {fit_module._fingerprint(regression_loss)}"
    assert out.stdout.split("\n")[-2] == expected
    assert fit_module._fingerprint(optax.adam(0.05)) != fit_module._fingerprint(optax.adam(0.1))

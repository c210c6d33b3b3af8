"""The public surface: ``dir(pg)`` is the API, every public name is documented, the package is typed."""

import importlib.resources
import inspect

import probgen as pg

SUBPACKAGES = {"diffusion", "dynamics", "flows", "gfn", "mc", "train", "vi", "dist"}


def test_dir_shows_the_api_not_the_modules():
    names = dir(pg)
    assert names == sorted(pg.__all__)
    leaked = [n for n in names if inspect.ismodule(getattr(pg, n)) and n not in SUBPACKAGES]
    assert leaked == []
    for name in ("protocol", "strategies", "bernoulli", "core", "kernels", "distributions", "showcase"):
        assert name not in names


def test_every_public_name_exists_and_is_documented():
    for name in pg.__all__:
        obj = getattr(pg, name)
        ours = (getattr(obj, "__module__", "") or "").startswith("probgen")
        if ours and (inspect.isclass(obj) or inspect.isfunction(obj)):
            assert (obj.__doc__ or "").strip(), f"pg.{name} has no docstring"


def test_the_package_ships_py_typed():
    assert importlib.resources.files("probgen").joinpath("py.typed").is_file()


def test_public_names_are_unique_across_subpackages():
    # One name, one thing: pg.mc.normalize and pg.vi.normalize, pg.vmap and pg.vi.vmap,
    # pg.sample and pg.diffusion.sample used to be unrelated functions of the same name.
    import importlib

    owners = {}
    for sub in ("core", "distributions", "diffusion", "dynamics", "flows", "gfn", "mc", "train", "vi"):
        module = importlib.import_module(f"probgen.{sub}")
        for name in module.__all__:
            value = getattr(module, name)
            assert name not in owners or owners[name][1] is value, (name, owners[name][0], sub)
            owners[name] = (sub, value)
    for name in pg.__all__:
        if name in owners and not inspect.ismodule(getattr(pg, name)):
            assert getattr(pg, name) is owners[name][1], name


def test_layers_import_only_the_layers_above():
    # The README's architecture map, top to bottom; a module may import its own layer and
    # the layers above it (distributions may use core's error classes, and nothing else of core).
    import pathlib
    import re

    order = ["distributions", "core", "kernels", "dynamics", "vi", "mc", "diffusion", "flows", "gfn", "train"]
    rank = {name: i for i, name in enumerate(order)}
    root = pathlib.Path(pg.__file__).parent
    upward = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        layer = parts[0]
        if layer not in rank:
            continue
        for module in re.findall(r"^\s*(?:from|import) (probgen\.[a-z_.]+)", path.read_text(), re.M):
            other = module.split(".")[1]
            if other in rank and rank[other] > rank[layer] and module != "probgen.core.errors":
                upward.append(f"{path.relative_to(root)} imports {module}")
    assert upward == []

"""Sphinx extension: the API reference pages, computed from probgen's ``__all__`` lists.

At ``config-inited`` it writes one section page per public module (``docs/api/probgen.rst``,
``docs/api/probgen.mc.rst``, ...) whose ``autosummary`` tables list that module's
``__all__``, and an A-to-Z page (``docs/api/all.rst``) from which autosummary generates one
page per object (``docs/api/generated/``).
Nothing here is a hard-coded list of names: a name added to an ``__all__`` gets its page on
the next build, and a new subpackage gets a section page (which Sphinx refuses, under
``-W``, until ``docs/api/index.md`` lists it in its toctree).

An object exported under several names (``pg.fit`` is ``pg.train.fit``; ``pg.Normal`` is
``pg.distributions.Normal``) gets one page, under its *canonical* name: the top-level
``probgen.<name>`` when it is there, else the first public module in layer order. The other
sections list it in a table that links to that page.

It also resolves the cross-references that probgen's docstrings write the way users type
them: ``:func:`pg.mc.nuts```, ``:class:`pg.Kernel```, or a name re-exported elsewhere
(``:func:`predictive``` inside ``pg.mc``), to the canonical page.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

# The layer order of the README's architecture map; a public module not named here (a new
# subpackage) is appended after these, so it is never silently left out.
LAYER_ORDER = ("distributions", "core", "kernels", "dynamics", "vi", "mc", "diffusion", "flows", "gfn", "train")

# (module, name) -> canonical full name, filled by write_pages for resolve_aliases.
_CANONICAL: dict[tuple[str, str], str] = {}

# Objects from these packages are documented with their own docstrings but without their
# members (numpyro's distributions carry dozens of inherited methods documented upstream).
FOREIGN_NOTE = {
    "numpyro": "Re-exported from NumPyro (``{qualname}``); see NumPyro's documentation for its methods.",
}


def public_modules() -> list[str]:
    """``probgen`` and every direct subpackage/module of it that declares ``__all__``, in layer order."""
    import probgen

    found = [info.name for info in pkgutil.iter_modules(probgen.__path__)]
    ordered = [name for name in LAYER_ORDER if name in found]
    ordered += sorted(name for name in found if name not in ordered)
    names = ["probgen"]
    for name in ordered:
        module = importlib.import_module(f"probgen.{name}")
        if hasattr(module, "__all__"):
            names.append(module.__name__)
    return names


def exported_submodules(modname: str) -> list[str]:
    """Modules of probgen that ``modname`` exports by name but that have no section of their own.

    ``pg.train.plots``, ``pg.flows.bijectors``: their functions are reached through the
    module, so they are documented in the section of the module that exports them.
    """
    module = importlib.import_module(modname)
    sections = set(public_modules())
    return [value.__name__ for value in (getattr(module, name) for name in module.__all__)
            if inspect.ismodule(value) and value.__name__.startswith("probgen.") and value.__name__ not in sections]


def module_members(modname: str) -> list[str]:
    """A module's public names: its ``__all__``, else the functions and classes it defines."""
    module = importlib.import_module(modname)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return sorted(name for name, value in vars(module).items()
                  if not name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value))
                  and value.__module__ == modname)


def canonical_names() -> dict[tuple[str, str], str]:
    """Map every ``(module, name)`` of the public API to the full name its page documents."""
    canonical: dict[tuple[str, str], str] = {}
    first: dict[str, tuple[str, object]] = {}
    sections = public_modules()
    for modname in sections + [sub for section in sections for sub in exported_submodules(section)]:
        module = importlib.import_module(modname)
        for name in module_members(modname):
            value = getattr(module, name)
            if inspect.ismodule(value):
                continue
            if name in first and first[name][1] is value:
                canonical[(modname, name)] = first[name][0]
            else:
                first.setdefault(name, (f"{modname}.{name}", value))
                canonical[(modname, name)] = f"{modname}.{name}"
    return canonical


def _kind(value: object) -> str:
    if inspect.isclass(value):
        return "class"
    if callable(value):
        return "function"
    return "data"


def _summary(module) -> str:
    doc = inspect.getdoc(module) or ""
    paragraph = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    prefix = f"{module.__name__}: "
    return paragraph[len(prefix):] if paragraph.startswith(prefix) else paragraph


def _group_title(value: object) -> str:
    """The section a name is listed under: the module that defines it."""
    defining = getattr(value, "__module__", None) if _kind(value) != "data" else None
    if not defining:
        return "Constants"
    if not defining.startswith("probgen"):
        return f"From ``{defining.split('.')[0]}``"
    return f"``{defining}``"


def _section_page(modname: str, canonical: dict[tuple[str, str], str]) -> str:
    module = importlib.import_module(modname)
    title = f"``{modname}``" if modname != "probgen" else "``probgen`` (``import probgen as pg``)"
    lines = [title, "=" * len(title), "", f".. automodule:: {modname}", "   :no-members:", ""]
    lines += [f".. currentmodule:: {modname}", ""]
    submodules = [n for n in module.__all__ if inspect.ismodule(getattr(module, n))]
    owned: dict[str, list[str]] = {}
    elsewhere: list[str] = []
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.ismodule(value):
            continue
        if canonical[(modname, name)] == f"{modname}.{name}":
            owned.setdefault(_group_title(value), []).append(name)
        else:
            elsewhere.append(canonical[(modname, name)])
    ordered = sorted(owned, key=lambda t: (t == "Constants", t.startswith("From"), t))
    for group in ordered:
        lines += [group, "-" * len(group), ""]
        first_module = getattr(getattr(module, owned[group][0]), "__module__", "")
        if group.startswith("``probgen"):
            summary = _summary(importlib.import_module(first_module))
            if summary:
                lines += [summary, ""]
        lines += [".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {name}" for name in owned[group]] + [""]
    if elsewhere:
        heading = "Also exported here"
        lines += [heading, "-" * len(heading), ""]
        lines += ["Documented under the name given in the table (the same object).", ""]
        lines += [".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {full}" for full in elsewhere] + [""]
    if submodules:
        heading = "Modules"
        lines += [heading, "-" * len(heading), ""]
        for name in submodules:
            value = getattr(module, name)
            if value.__name__.startswith("probgen."):
                lines.append(f"- :mod:`{value.__name__}` (``{modname}.{name}``): {_summary(value)}")
            else:
                lines.append(f"- ``{modname}.{name}``: the whole ``{value.__name__}`` catalogue (below).")
        lines.append("")
        for name in submodules:
            value = getattr(module, name)
            if value.__name__.startswith("probgen.") and value.__name__ in exported_submodules(modname):
                heading = f"``{value.__name__}``"
                lines += [heading, "-" * len(heading), ""]
                lines += [f".. automodule:: {value.__name__}", "   :no-members:", ""]
                lines += [".. autosummary::", "   :nosignatures:", ""]
                for member in module_members(value.__name__):  # relative to the module automodule set
                    full = canonical[(value.__name__, member)]
                    lines.append(f"   {full.removeprefix(value.__name__ + '.')}")
                lines.append("")
            elif not value.__name__.startswith("probgen."):
                lines += [f".. py:module:: {modname}.{name}", ""]
                lines += [f"``{modname}.{name}`` is ``{value.__name__}`` itself: every family of its "
                          f"catalogue works at a sample site, e.g. ``pg.{name}.Gumbel(0.0, 1.0)``.", ""]
    return "\n".join(lines)


def _all_names_page(canonical: dict[tuple[str, str], str]) -> str:
    """The A-to-Z page, whose autosummary generates every object's page.

    The object pages hang from this page's toctree, and this page is an orphan (linked from
    the API index, not in the site's toctree): the sidebar of every page then lists the
    sections only. With the 400 object pages in the site's toctree, the theme's sidebar
    (rendered into every page) made the build five times slower.
    """
    title = "All public names, A to Z"
    names = sorted(set(canonical.values()), key=lambda full: (full.rsplit(".", 1)[1].lower(), full))
    lines = [":orphan:", "", title, "=" * len(title), ""]
    lines += ["Every object of the public API under the name its page documents it by; the",
              ":doc:`API reference <index>` groups them by subpackage and module.", ""]
    lines += [".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
    lines += [f"   {full}" for full in names] + [""]
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:  # unchanged pages keep their mtime
        path.write_text(text)


def write_pages(app, config) -> None:
    """Write ``api/<module>.rst`` for every public module and ``api/all.rst``."""
    api = Path(app.srcdir) / "api"
    canonical = canonical_names()
    for modname in public_modules():
        _write(api / f"{modname}.rst", _section_page(modname, canonical))
    _write(api / "all.rst", _all_names_page(canonical))
    _CANONICAL.clear()
    _CANONICAL.update(canonical)


def skip_members(app, what, name, obj, skip, options):
    """Leave out foreign classes' members (numpyro's distributions) and bare NamedTuple fields."""
    parent_module = getattr(obj, "__module__", "") or ""
    if what == "class" and parent_module and not parent_module.startswith("probgen"):
        return True
    # A NamedTuple field's generated docstring says nothing the class signature does not.
    if what == "class" and (getattr(obj, "__doc__", "") or "").startswith("Alias for field number"):
        return True
    return None


def annotate_docstrings(app, what, name, obj, options, lines) -> None:
    """Replace a builtin container's docstring on a constant; name the source of foreign classes."""
    if what == "data" and type(obj).__module__ == "builtins" and lines and \
            "\n".join(lines).strip() == (inspect.getdoc(type(obj)) or "").strip():
        lines[:] = ["A constant (its value is shown above)."]
    if what == "class" and name.startswith("probgen.") and not obj.__module__.startswith("probgen"):
        package = obj.__module__.split(".")[0]
        if package in FOREIGN_NOTE:
            note = FOREIGN_NOTE[package].format(qualname=f"{obj.__module__}.{obj.__qualname__}")
            lines[:0] = [note, ""]


def resolve_aliases(app, env, node, contnode):
    """Resolve ``pg.x`` and re-exported names to the page of their canonical name."""
    if node.get("refdomain") != "py":
        return None
    canonical = _CANONICAL
    target = node["reftarget"].lstrip("~.")
    if target.startswith("pg."):
        target = "probgen." + target[3:]
    candidates = [target] if target.startswith("probgen") else []
    if node.get("py:module"):
        candidates.append(f"{node['py:module']}.{target}")
    candidates.append(f"probgen.{target}")
    by_name = {}
    for (modname, name), full in canonical.items():
        by_name.setdefault(name, set()).add(full)
    head = target.split(".")[0]
    if len(by_name.get(head, ())) == 1:
        candidates.append(next(iter(by_name[head])) + target[len(head):])
    domain = env.get_domain("py")
    for candidate in candidates:
        parts = candidate.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            key = (".".join(parts[:cut]), parts[cut])
            if key in canonical:
                full = ".".join([canonical[key], *parts[cut + 1:]])
                ref = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], full,
                                          node, contnode)
                if ref is None:
                    ref = domain.resolve_xref(env, node["refdoc"], app.builder, "obj", full, node, contnode)
                if ref is not None:
                    return ref
                break
    return None


def setup(app):
    """Register the page writer and the handlers."""
    app.connect("config-inited", write_pages)
    app.connect("autodoc-skip-member", skip_members)
    app.connect("autodoc-process-docstring", annotate_docstrings)
    app.connect("missing-reference", resolve_aliases)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

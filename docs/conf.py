"""Sphinx configuration of probgen's documentation site (``make docs``; ``make docs-check`` tests it).

The tutorials are the notebooks in ``notebooks/`` as executed by ``make test`` (nbmake
``--overwrite`` on copies in ``build/notebooks/``); this build reads those copies and never
executes them again (``nb_execution_mode = "off"``). ``make docs`` executes any copy that is
missing or older than its notebook first. The landing page's example is the one cell the
build executes itself.
"""

import json
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

import probgen  # noqa: E402

NOTEBOOKS = ROOT / "notebooks"
EXECUTED = Path(os.environ.get("PROBGEN_EXECUTED_NOTEBOOKS", ROOT / "build" / "notebooks"))
TUTORIALS = DOCS / "tutorials"


def _executed_copy(source: Path) -> Path:
    """The executed copy of one notebook, checked: present, up to date, run without error."""
    copy = EXECUTED / source.name
    hint = "run `make docs` (it executes missing notebooks) or `make test`"
    if not copy.exists():
        raise RuntimeError(f"{copy} is missing: the docs read executed notebooks; {hint}")
    if copy.stat().st_mtime < source.stat().st_mtime:
        raise RuntimeError(f"{copy} is older than {source}: {hint}")
    notebook = json.loads(copy.read_text())
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code" or not "".join(cell["source"]).strip():
            continue
        if cell.get("execution_count") is None:
            raise RuntimeError(f"{copy}: code cell {index} was never executed; {hint}")
        if any(output.get("output_type") == "error" for output in cell.get("outputs", [])):
            raise RuntimeError(f"{copy}: code cell {index} raised an error; fix the notebook, delete {copy}, "
                               f"then {hint}")
    return copy


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _for_the_site(copy: Path) -> str:
    """An executed notebook as the site shows it: everything but its Jupyter widgets.

    The only widgets the notebooks make are tqdm progress bars (``pg.sweep``). Showing a
    widget needs the ipywidgets JavaScript from a CDN, which an offline site cannot have,
    and its text fallback is the bar at 0%; so the site leaves them out.
    """
    notebook = json.loads(copy.read_text())
    notebook["metadata"].pop("widgets", None)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = [out for out in cell["outputs"] if WIDGET_VIEW not in out.get("data", {})]
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def _sync_tutorials() -> None:
    """Copy the executed notebooks into docs/tutorials/ (only those that changed)."""
    sources = sorted(NOTEBOOKS.glob("*.ipynb"))
    wanted = {source.name for source in sources}
    for stale in TUTORIALS.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for source in sources:
        text = _for_the_site(_executed_copy(source))
        target = TUTORIALS / source.name
        if not target.exists() or target.read_text() != text:
            target.write_text(text)


_sync_tutorials()

# The landing page's cells run in a Jupyter kernel started from this process: without
# MPLBACKEND, ipykernel draws inline figures (with MPLBACKEND=Agg it would draw none).
os.environ.pop("MPLBACKEND", None)

project = "probgen"
author = "the probgen developers"
copyright = "the probgen developers"  # noqa: A001 (Sphinx's name)
release = version = probgen.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "myst_nb",
    "probgen_api",
    "tex_source",
]

# .rst first: autosummary writes its generated pages with the first suffix.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "tests", "_ext", "_templates", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# API reference: Google-style docstrings, one generated page per public object.
autosummary_generate = True
autosummary_imported_members = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Attributes:" sections become a field list, not attribute entries: a NamedTuple's fields
# would otherwise be described twice (the section and autodoc's members), an error under -W.
napoleon_use_ivar = True
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
add_module_names = False
python_display_short_literal_types = True

# Notebooks: read as executed by `make test`, never executed here; the landing page opts in
# to execution in its own front matter (execution_mode: force).
nb_execution_mode = "off"
nb_execution_raise_on_error = True
nb_execution_timeout = 120
nb_merge_streams = True
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# Formulas (NumPyro's distribution docstrings have some) are shown as their TeX source: the
# site makes no request outside itself, and MathJax would come from a CDN (docs/_ext/tex_source.py).
html_math_renderer = "tex_source"

html_theme = "furo"
html_title = f"probgen {release}"
html_static_path = ["_static"]
html_css_files = ["probgen.css"]
html_show_sourcelink = False
html_copy_source = False

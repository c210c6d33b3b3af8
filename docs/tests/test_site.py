"""The built documentation site: links, the API reference's coverage, and pages in a real browser.

Run by ``make docs-check`` after ``sphinx-build -W`` has written ``docs/_build/html``
(``PROBGEN_DOCS_HTML`` points elsewhere). Nothing here builds the site: a missing build is
an error, not a skip.
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import importlib
import inspect
import os
import pkgutil
import posixpath
import re
import threading
import zlib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

DOCS = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("PROBGEN_DOCS_HTML", DOCS / "_build" / "html"))
SCREENSHOTS = Path(os.environ.get("PROBGEN_DOCS_SCREENSHOTS", DOCS / "_build" / "screenshots"))
CHROMIUM = os.environ.get("PROBGEN_CHROMIUM", "/usr/bin/chromium")
# Flags that keep a headless Chromium quiet and offline (no sync, updates or QUIC probes).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
EXTERNAL_SCHEMES = {"http", "https", "mailto", "ftp", "data", "javascript", "tel"}


class _PageParser(html.parser.HTMLParser):
    """Collects a page's element ids and the URLs it refers to (href, src)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, url)

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name") and (name == "id" or tag == "a"):
                self.ids.add(value)
            if name in ("href", "src") and tag in ("a", "link", "img", "script", "iframe", "source", "image"):
                self.urls.append((tag, name, value))


@functools.cache
def _parse(page: Path) -> _PageParser:
    parser = _PageParser()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def site() -> Path:
    index = SITE / "index.html"
    assert index.is_file(), f"{index} is missing: build the site first (make docs-check)"
    return SITE


def test_every_internal_link_and_asset_resolves(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 50, f"only {len(pages)} pages under {site}"
    broken, remote_assets = [], []
    for page in pages:
        for tag, attribute, url in _parse(page).urls:
            parts = urlsplit(url)
            if parts.scheme or parts.netloc:
                if tag != "a" and parts.scheme != "data":
                    remote_assets.append(f"{page.relative_to(site)}: <{tag} {attribute}={url}>")
                if parts.scheme in EXTERNAL_SCHEMES or parts.netloc:
                    continue
            if not parts.path and not parts.fragment:
                continue
            target = page if not parts.path else page.parent / unquote(parts.path)
            if target.is_dir():
                target = target / "index.html"
            where = f"{page.relative_to(site)}: <{tag} {attribute}={url}>"
            if not target.resolve().is_relative_to(site.resolve()) or not target.is_file():
                broken.append(f"{where}: no file {posixpath.normpath(str(target))}")
                continue
            if parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _parse(target).ids:
                broken.append(f"{where}: no anchor #{parts.fragment} in {target.relative_to(site)}")
    assert broken == [], f"{len(broken)} broken internal links, e.g.:\n" + "\n".join(broken[:30])
    # Every asset (script, stylesheet, image) is served by the site itself: no CDN at reading time.
    assert remote_assets == [], "\n".join(remote_assets[:30])


def _public_modules() -> list[str]:
    import probgen

    names = ["probgen"]
    for info in pkgutil.iter_modules(probgen.__path__):
        module = importlib.import_module(f"probgen.{info.name}")
        if hasattr(module, "__all__"):
            names.append(module.__name__)
    return names


def _inventory(site: Path) -> dict[str, str]:
    """Sphinx's objects.inv, read by hand: Python-domain name -> URI (page#anchor)."""
    raw = (site / "objects.inv").read_bytes()
    header_end = 0
    for _ in range(4):  # four '#' header lines, then the zlib-compressed body
        header_end = raw.index(b"\n", header_end) + 1
    entries = {}
    for line in zlib.decompress(raw[header_end:]).decode().splitlines():
        match = re.match(r"(.+?)\s+(py:\w+)\s+-?\d+\s+(\S+)\s+(.*)", line)
        if match:
            name, _, uri, _ = match.groups()
            entries[name] = uri[:-1] + name if uri.endswith("$") else uri
    return entries


def test_every_public_name_has_a_reference_page(site):
    modules = {name: importlib.import_module(name) for name in _public_modules()}
    assert {"probgen", "probgen.core", "probgen.mc", "probgen.vi"} <= set(modules)
    documented = _inventory(site)
    missing, checked = [], 0
    for modname, module in modules.items():
        for name in module.__all__:
            value = getattr(module, name)
            # The page may document the object under any public name that is the same object
            # (pg.fit is pg.train.fit), or a module under its own name.
            aliases = {f"{other}.{name}" for other, m in modules.items()
                       if name in m.__all__ and getattr(m, name) is value}
            if inspect.ismodule(value) and value.__name__.startswith("probgen"):
                aliases.add(value.__name__)
            found = sorted(alias for alias in aliases if alias in documented)
            if not found:
                missing.append(f"{modname}.{name}")
                continue
            page, _, anchor = documented[found[0]].partition("#")
            if not (site / page).is_file() or (anchor and anchor not in _parse(site / page).ids):
                missing.append(f"{modname}.{name} -> {documented[found[0]]} (no such page or anchor)")
            checked += 1
    assert missing == [], f"{len(missing)} public names without a reference page:\n" + "\n".join(missing)
    assert checked > 300


def test_every_notebook_is_a_tutorial_with_its_outputs(site):
    notebooks = sorted((DOCS.parent / "notebooks").glob("*.ipynb"))
    assert notebooks
    index = (site / "tutorials" / "index.html").read_text(encoding="utf-8")
    for notebook in notebooks:
        page = site / "tutorials" / f"{notebook.stem}.html"
        assert page.is_file(), f"no tutorial page for {notebook.name}"
        assert f"{notebook.stem}.html" in index, f"{notebook.name} is not in the tutorials index"
        text = page.read_text(encoding="utf-8")
        assert 'class="cell_output' in text, f"{page.name} shows no executed output"


# ---- a real browser ------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output for failures
        pass


@pytest.fixture(scope="module")
def served(site):
    """The built site on an ephemeral port of 127.0.0.1, stopped after the module's tests."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: `make docs-check` installs Debian's chromium"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def browser_page(browser):
    """A fresh tab per test, so that each test sees only its own page's events."""
    page = browser.new_page()
    try:
        yield page
    finally:
        page.close()


def _open(page, url: str, base: str) -> list[str]:
    """Load ``url``; return what went wrong in the browser (JS errors, failed or outside requests)."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    page.on("request", lambda request: None if request.url.startswith((base, "data:"))
            else problems.append(f"outside request: {request.url}"))
    page.goto(url, wait_until="load")
    return problems


def _assert_renders(page, title_part: str) -> None:
    assert title_part in page.title(), page.title()
    code = page.locator("div.cell div.cell_input pre").first
    assert code.is_visible(), "no visible code cell"
    assert page.locator("div.cell div.cell_output").count() >= 1, "no cell output"
    figures = page.locator("div.cell_output img")
    assert figures.count() >= 1, "no figure in the cell outputs"
    figure = figures.first
    figure.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=figure.element_handle())
    assert figure.evaluate("img => img.naturalWidth") > 0


def _figure_tutorial(site: Path) -> Path:
    """The first tutorial (in order) whose outputs include a figure."""
    for page in sorted((site / "tutorials").glob("[0-9]*.html")):
        if re.search(r'class="cell_output[^"]*".*?<img', page.read_text(encoding="utf-8"), re.S):
            return page
    raise AssertionError("no tutorial page has a figure in its outputs")


def test_landing_page_renders_in_chromium(served, browser_page):
    problems = _open(browser_page, f"{served}/index.html", served)
    _assert_renders(browser_page, "probgen")
    output = browser_page.locator("div.cell div.cell_output").first.inner_text()
    assert "VI" in output and "NUTS" in output and "exact" in output, output
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # The whole page in one picture: a viewport as tall as the page (a full_page capture of a
    # shorter viewport draws the theme's sticky sidebar half-way down).
    height = browser_page.evaluate("document.documentElement.scrollHeight")
    browser_page.set_viewport_size({"width": 1280, "height": min(height, 8000)})
    browser_page.evaluate("window.scrollTo(0, 0)")
    browser_page.screenshot(path=str(SCREENSHOTS / "landing.png"))
    assert problems == []


def test_a_tutorial_with_figures_renders_in_chromium(site, served, browser_page):
    tutorial = _figure_tutorial(site)
    problems = _open(browser_page, f"{served}/tutorials/{tutorial.name}", served)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser_page.screenshot(path=str(SCREENSHOTS / "tutorial-top.png"))
    heading = browser_page.locator("article h1").first.inner_text().strip().rstrip("#").strip()
    _assert_renders(browser_page, heading[:20])  # scrolls the first figure into view
    browser_page.screenshot(path=str(SCREENSHOTS / "tutorial-figure.png"))
    assert problems == []

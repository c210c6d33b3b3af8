"""Sphinx extension: an HTML math renderer that shows formulas as their TeX source.

The site is read offline and fetches nothing from outside itself (``docs/tests/test_site.py``
checks it), while MathJax, Sphinx's default renderer, loads from a CDN. The few formulas on
the site (in NumPyro's distribution docstrings) read well enough as TeX.
"""

from docutils import nodes


def _visit_inline(self, node):
    self.body.append(self.starttag(node, "code", "", CLASS="math tex-source notranslate"))
    self.body.append(self.encode(node.astext()))
    self.body.append("</code>")
    raise nodes.SkipNode


def _visit_block(self, node):
    self.body.append(self.starttag(node, "pre", CLASS="math tex-source notranslate"))
    self.body.append(self.encode(node.astext()))
    self.body.append("</pre>\n")
    raise nodes.SkipNode


def setup(app):
    """Register the renderer; ``html_math_renderer = "tex_source"`` selects it."""
    app.add_html_math_renderer("tex_source", (_visit_inline, None), (_visit_block, None))
    return {"parallel_read_safe": True, "parallel_write_safe": True}

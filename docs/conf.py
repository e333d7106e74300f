"""Sphinx configuration of the course's book (``make book``; ``tools/book.py`` assembles the pages).

The executed notebooks are the content: MyST-NB renders their stored outputs and never runs
them. Formulas are typeset by a MathJax bundled in a Python package (``sphinx-mathjax-offline``),
so no page asks the network for anything.
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

project = "The Visual Attention Network course"
author = "the VAN course"
copyright = "2026, the VAN course"  # noqa: A001

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax",
              "sphinx-mathjax-offline"]
myst_enable_extensions = ["dollarmath", "amsmath"]
nb_execution_mode = "off"          # the stored outputs are the content
nb_merge_streams = True
suppress_warnings = ["mystnb.unknown_mime_type"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

autodoc_default_options = {"members": True, "undoc-members": False}
autodoc_typehints = "description"
autodoc_mock_imports = []

html_theme = "sphinx_book_theme"
html_title = project
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"  # else browsers ask for /favicon.ico and get a 404
html_theme_options = {
    "show_navbar_depth": 1,
    "use_download_button": True,
    "show_toc_level": 2,
    "home_page_in_toc": True,
}
html_show_sourcelink = False
html_copy_source = False
html_last_updated_fmt = None

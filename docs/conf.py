"""Sphinx configuration of the sklearn-deeploc documentation (built offline).

Build: ``python -m sphinx -W -b html docs docs/_build/html``.
``SKLEARN_DEEPLOC_GALLERY`` (a regular expression on example paths) runs only the
matching examples, e.g. ``SKLEARN_DEEPLOC_GALLERY=synthetic`` for a quick build; the
others are then shown as code, without their outputs.
"""

import os
import re

import sklearn_deeploc

project = "sklearn-deeploc"
author = "sklearn-deeploc developers"
copyright = "sklearn-deeploc developers"
release = version = sklearn_deeploc.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

# No intersphinx: the build touches no network, so references to other projects'
# objects are written as plain literals.
templates_path = ["_templates"]
exclude_patterns = ["_build"]
default_role = "literal"

autosummary_generate = True
autodoc_typehints = "none"

# Methods are listed by the class template (one page per class); numpydoc would
# list them a second time, including those inherited from scikit-learn.
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": re.escape(os.sep)
    + "plot_.*("
    + os.environ.get("SKLEARN_DEEPLOC_GALLERY", "")
    + ")",
    "ignore_pattern": r"__init__\.py",
    "abort_on_example_error": True,
    "min_reported_time": 1,
    "within_subsection_order": "FileNameSortKey",
    "remove_config_comments": True,
    "matplotlib_animations": False,
    # A last line that draws returns an Axes or Colorbar: show no repr for it.
    "capture_repr": ("_repr_html_",),
}

html_theme = "pydata_sphinx_theme"
html_title = "sklearn-deeploc"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"index": [], "getting_started": []}
html_static_path = []


def skip_metadata_requests(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated ``set_*_request`` methods (metadata routing)."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", skip_metadata_requests)

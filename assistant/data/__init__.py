"""Example files shipped inside the package, for installs that have no checkout beside them (wheel, pipx).

`config.yaml` (every setting, documented in place) and `keywords-en.txt` / `keywords-zh.txt` (wake phrases) are
copies of the repo-root `config.yaml` and `examples/keywords-*.txt`: those stay where README points a checkout
user, these are what `assistant example NAME` prints after a regular install. tests/test_package_data.py keeps
each pair identical. (Copies rather than one file: setuptools only ships files inside a package, and a symlink
would not survive every checkout and sdist.)
"""

from __future__ import annotations

from importlib import resources

# name -> file in this package
EXAMPLES = {
    "config": "config.yaml",
    "keywords-en": "keywords-en.txt",
    "keywords-zh": "keywords-zh.txt",
}


def read_example(name: str) -> str:
    """The text of example `name` (a key of EXAMPLES); KeyError for others."""
    return resources.files(__name__).joinpath(EXAMPLES[name]).read_text(encoding="utf-8")

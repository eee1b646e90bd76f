"""The installed package's version (a module of its own, so that any module can import it)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sklearn-deeploc")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

"""DeepLoc (Kraus et al. 2017) as a scikit-learn citizen."""

from importlib.metadata import PackageNotFoundError, version

from .network import DeepLocNet

try:
    __version__ = version("sklearn-deeploc")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["DeepLocNet", "__version__"]

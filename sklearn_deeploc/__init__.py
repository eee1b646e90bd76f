"""DeepLoc (Kraus et al. 2017) as a scikit-learn citizen."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sklearn-deeploc")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from .classifier import DeepLocClassifier  # noqa: E402
from .featurizer import DeepLocFeaturizer  # noqa: E402
from .network import DeepLocNet  # noqa: E402
from .pretrained import load_pretrained  # noqa: E402

__all__ = ["DeepLocClassifier", "DeepLocFeaturizer", "DeepLocNet", "__version__", "load_pretrained"]

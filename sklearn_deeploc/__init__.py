"""DeepLoc (Kraus et al. 2017) as a scikit-learn citizen."""

from ._version import __version__
from .classifier import DeepLocClassifier, load_pretrained
from .featurizer import DeepLocFeaturizer
from .handcrafted import HandcraftedFeatures
from .model import DeepLocModel
from .network import DeepLocNet

__all__ = [
    "DeepLocClassifier",
    "DeepLocFeaturizer",
    "DeepLocModel",
    "DeepLocNet",
    "HandcraftedFeatures",
    "__version__",
    "load_pretrained",
]

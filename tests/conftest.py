from pathlib import Path

import numpy as np
import pytest

from sklearn_deeploc import DeepLocClassifier
from sklearn_deeploc.datasets import make_yeast_cells

collect_ignore = ["fixtures/make_tf_checkpoint.py"]  # needs tensorflow; not a test
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY_NET = {"conv_channels": (4, 4, 8, 8, 8, 8, 8, 8), "fc_units": (16, 12)}
SOURCE_CLASSES = ["NUCLEI", "VACUOLE", "CELLPERIPHERY", "PEROXISOME"]


@pytest.fixture
def shared_data():
    """The real microscopy samples beside the project; tests skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real microscopy samples not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def tiny_classifier(**params):
    """A DeepLoc small enough to train in about a second on 2 CPU cores."""
    defaults = {
        **TINY_NET,
        "max_iter": 12,
        "batch_size": 16,
        "validation_interval": 6,
        "random_state": 0,
    }
    return DeepLocClassifier(**{**defaults, **params})


@pytest.fixture(scope="session")
def cells():
    """A small synthetic source screen: 6 cells of each of 4 classes."""
    return make_yeast_cells(6, SOURCE_CLASSES, random_state=0)


@pytest.fixture(scope="session")
def source_model(cells):
    """A tiny classifier fitted once per session (read-only in tests)."""
    return tiny_classifier().fit(*cells)


@pytest.fixture(scope="session")
def source_folder(source_model, tmp_path_factory):
    return source_model.save_pretrained(tmp_path_factory.mktemp("models") / "source")


@pytest.fixture
def make_tiny():
    """Factory fixture for tiny classifiers: ``make_tiny(max_iter=4, ...)``."""
    return tiny_classifier

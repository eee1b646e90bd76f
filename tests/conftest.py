"""Shared fixtures, and the suite's rule for comparing float results.

Numeric tolerance policy
------------------------
float32 results of two different code paths are compared with
:func:`assert_same_float32` (rtol 1e-5, atol 1e-6), never bitwise. The BLAS and
oneDNN kernels behind the network differ by CPU (AMX, AVX-512, AVX2) and pick
their blocking by batch size, position in the batch and buffer alignment, so the
same cells can round differently in the last bits: a model loaded from its
folder against its source, the model against the estimator, another batch
size, a permuted or lazily blocked input, a fresh process. On an AMX Xeon these
differ by up to 3e-8, where this project's 2-core AMD gives equal bits.

Exact equality stays where exact is the claim: the same buffers through the
same path (a run repeated with the same seed, a resumed or cached result),
copied weights and data, and integer or label outputs.
"""

from pathlib import Path

import numpy as np
import pytest

from sklearn_deeploc import DeepLocClassifier
from sklearn_deeploc.datasets import make_yeast_cells

collect_ignore = ["fixtures/make_tf_checkpoint.py"]  # needs tensorflow; not a test
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY_NET = {"conv_channels": (4, 4, 8, 8, 8, 8, 8, 8), "fc_units": (16, 12)}
SOURCE_CLASSES = ["NUCLEI", "VACUOLE", "CELLPERIPHERY", "PEROXISOME"]
FLOAT32_RTOL, FLOAT32_ATOL = 1e-5, 1e-6


def assert_same_float32(actual, desired):
    """Assert two float32 results of different code paths agree to float32 rounding.

    The kernels' rounding depends on the CPU, the batch layout and buffer
    alignment (see the module docstring), so bitwise equality would test the
    machine. Any real difference (a wrong channel, layer or cell order) is far
    larger than rtol 1e-5, atol 1e-6.

    Examples
    --------
    >>> assert_same_float32([0.25, 0.75], [0.25 + 3e-8, 0.75 - 3e-8])
    """
    np.testing.assert_allclose(actual, desired, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


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

"""scikit-learn's estimator checks on tiny configurations.

The checks feed small tables (1 to 10 columns). The classifier reads a table
of width C as C channels of 1x1 pixels (``image_size=1, crop_size=1``) and
passes every check but one that asks for more than float32 can promise (listed
with the reason below; sklearn makes it a non-strict xfail, so it passes where the
CPU's kernels happen to agree). The featurizer's input width is fixed by its
pretrained network (here 3 channels of 1x1), so the checks that feed another
width cannot pass: each is listed with that reason.
"""

import numpy as np
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_deeploc import DeepLocClassifier, DeepLocFeaturizer

# Learns check_classifiers_train's blobs with a wide margin on any kernels: 0.95 to
# 0.985 (2 classes) and 0.917 to 0.933 (3 classes) over seeds 0, 1, 2 and 42, natively
# and under MKL_CBWR=COMPATIBLE or AVX2, where the check asks for 0.83 (a logistic
# regression reaches 0.97 and 0.927). Four channels, batches of 16 and lr 0.01 reached
# 0.60 with seed 0 under MKL_CBWR=COMPATIBLE and below 0.83 on an AMX Xeon.
TINY_TABULAR = {
    "conv_channels": (8,) * 8,
    "fc_units": (16, 16),
    "crop_size": 1,
    "image_size": 1,
    "stretch": None,
    "max_iter": 150,
    "batch_size": 64,
    "lr": 0.03,
    "random_state": 0,
}


def _tiny_source():
    rng = np.random.default_rng(0)
    X = rng.random((20, 3))
    return DeepLocClassifier(**{**TINY_TABULAR, "max_iter": 3}).fit(X, np.arange(20) % 2)


FIXED_WIDTH = (
    "the pretrained network fixes the input to 3 channels (3 columns here); the check "
    "feeds another width and gets a ValueError saying so"
)
PERMUTED_BATCH = (
    "the outputs are float32 and the check allows rtol 1e-7, atol 1e-9, finer than float32's "
    "spacing (6e-8 to 1.2e-7 relative); the kernels round a cell by its position in the batch "
    "on some CPUs: a permuted set differs by 3e-9 on AMX Xeons, by 1.5e-8 on an AVX-512 EPYC "
    "under MKL_CBWR=COMPATIBLE, and the check's permutation is unseeded"
)
FEATURIZER_EXPECTED_FAILURES = {"check_methods_sample_order_invariance": PERMUTED_BATCH} | {
    name: FIXED_WIDTH
    for name in (
        "check_estimators_overwrite_params",
        "check_estimators_fit_returns_self",
        "check_readonly_memmap_input",
        "check_n_features_in_after_fitting",
        "check_positive_only_tag_during_fit",
        "check_estimators_dtypes",
        "check_dtype_object",
        "check_fit2d_1sample",
        "check_fit2d_1feature",
        "check_fit_idempotent",
        "check_fit_check_is_fitted",
        "check_n_features_in",
    )
}


CLASSIFIER_EXPECTED_FAILURES = {"check_methods_sample_order_invariance": PERMUTED_BATCH}


def _expected_failed_checks(estimator):
    if isinstance(estimator, DeepLocFeaturizer):
        return FEATURIZER_EXPECTED_FAILURES
    return CLASSIFIER_EXPECTED_FAILURES


@parametrize_with_checks(
    [
        DeepLocClassifier(**TINY_TABULAR),
        DeepLocFeaturizer(_tiny_source(), tta=False),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)

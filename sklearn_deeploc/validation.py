"""Input and parameter checks shared by every estimator and command.

Crops, labels, probability tables, sizes, memory and ``_parameter_constraints`` entries:
each error says what was expected and what came.
"""

import math
import numbers
import os
import re
import sys
import warnings

import numpy as np
import pandas as pd
from sklearn.utils._param_validation import Options
from sklearn.utils.validation import column_or_1d

IMAGE_SIZE = 64
# More channels read from a flat row's width alone may be larger crops (1 of 128x128 is 4)
MAX_FLAT_CHANNELS = 3
MAX_CHANNELS_LAST = 8  # a last axis this short after two long ones is channels, not pixels
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _untensor(X):
    """A torch tensor's values as numpy (no gradient, on the CPU); anything else as it is."""
    torch = sys.modules.get("torch")  # a tensor can only exist once torch is imported
    if torch is None or not isinstance(X, torch.Tensor):
        return X
    X = X.detach().cpu()
    if X.dtype.is_floating_point and X.element_size() < 4:
        X = X.float()  # bfloat16 has no numpy dtype; float16 widens exactly
    return X.numpy()


def _stack_ragged_safe(items):
    """Stack a list of crops, refusing crops of different shapes by name."""
    items = [_untensor(x) for x in items]
    shapes = []
    for k, item in enumerate(items):
        try:
            shapes.append(np.shape(item))
        except ValueError:
            raise ValueError(
                f"Crop {k} is ragged: its channels or rows differ in length. Expected "
                "crops of one shape (n_channels, height, width)."
            ) from None
        if shapes[k] != shapes[0]:
            raise ValueError(
                f"The crops differ in shape: crop 0 is {shapes[0]}, crop {k} is "
                f"{shapes[k]}. Expected crops of one shape (n_channels, height, width); "
                "crop or pad them to one size first (see screen.crop_cells)."
            )
    return np.asarray(items)


def _as_numeric_array(X):
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(
            "Sparse input is not supported: DeepLoc expects dense image crops; "
            f"got {type(X).__name__}. Convert it with X.toarray() first."
        )
    if hasattr(X, "iloc"):  # pandas DataFrame of the flat layout
        X = X.to_numpy()
    X = _untensor(X)
    if isinstance(X, (list, tuple)) and len(X):
        X = _stack_ragged_safe(X)
    X = np.asarray(X)
    if X.dtype.kind == "c":
        raise ValueError("Complex data not supported: expected real pixel values.")
    if X.dtype.kind == "O":
        missing = np.equal(X, None)
        if missing.any():
            position = np.unravel_index(int(np.argmax(missing)), X.shape)
            raise ValueError(
                f"Input X contains None (a missing value): {int(missing.sum())} value(s), the "
                f"first at index {tuple(int(i) for i in position)}. Expected numeric pixel values."
            )
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as error:
            odd = next(v for v in X.flat if not isinstance(v, numbers.Real))  # error path only
            raise TypeError(
                "Expected numeric pixel values (integer or float); X holds "
                f"{type(odd).__name__} values such as {odd!r} ({error})."
            ) from None
    elif X.dtype.kind not in "biuf":
        raise TypeError(f"Expected numeric pixel values (integer or float); got dtype {X.dtype}.")
    return X


def _where(mask):
    cell, channel, row, col = np.unravel_index(int(np.argmax(mask)), mask.shape)
    return f"cell {cell}, channel {channel}, row {row}, column {col}"


def check_crops(X, *, n_channels=None, image_size=IMAGE_SIZE, min_size=None):
    """Validate single-cell crops; return them as a C-contiguous, writable float32 (n, C, H, W).

    Also accepted: the flat DeepLoc HDF5 layout ``(n, C * image_size**2)`` (channels one after
    another, each row-major; ``n_channels`` splits a row, else ``width // image_size**2``), a
    list of crops, a DataFrame or a torch tensor (detached and copied to the CPU).
    """
    X = _as_numeric_array(X)
    if X.ndim == 2:
        width, pixels = X.shape[1], image_size * image_size
        if width == 0:
            raise ValueError(
                f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 "
                "is required: expected pixel columns."
            )
        channels = n_channels if n_channels is not None else max(width // pixels, 1)
        if n_channels is None and channels > MAX_FLAT_CHANNELS and width == channels * pixels:
            larger = f" ({channels // 4} of {2 * image_size}x{2 * image_size}?)"
            warnings.warn(
                f"A flat X of {width} columns is read as {channels} channels of {image_size}x"
                f"{image_size} (the DeepLoc layout). Pass larger crops"
                f"{larger if channels % 4 == 0 else ''} as (n_cells, n_channels, height, "
                "width): read flat, their rows become channels.",
                UserWarning,
                stacklevel=3,
            )
        if width != channels * pixels:
            raise ValueError(
                f"A flat X must have n_channels * {image_size} * {image_size} = "
                f"{channels * pixels} columns ({channels} channel(s) of {image_size}x"
                f"{image_size}, channel-major); got {width} columns."
            )
        X = X.reshape(len(X), channels, image_size, image_size)
    elif X.ndim != 4:
        hint = " Reshape your data with X.reshape(1, -1) if it is one cell." if X.ndim == 1 else ""
        raise ValueError(
            "Expected crops of shape (n_cells, n_channels, height, width) or the flat "
            f"DeepLoc layout (n_cells, n_channels * {image_size} * {image_size}); got a "
            f"{X.ndim}-D array of shape {X.shape}.{hint}"
        )
    n, channels, height, width = X.shape
    if n == 0:
        raise ValueError(f"Expected at least one cell; got X of shape {X.shape}.")
    check_channels_first(X.shape, n_channels, what="X")
    if n_channels is not None and channels != n_channels:
        raise ValueError(f"Expected {n_channels} channel(s); got {channels} (X shape {X.shape}).")
    if min_size is not None and min(height, width) < min_size:
        raise ValueError(
            f"Crops of {height}x{width} pixels are smaller than the network's crop size "
            f"{min_size}x{min_size}; expected at least {min_size} pixels per side."
        )
    with np.errstate(over="ignore"):  # overflow is reported below, with its position
        crops = np.require(X, dtype=np.float32, requirements=["C", "W"])
    bad = ~np.isfinite(crops)
    if bad.any():  # NaN or inf in X, or else values beyond float32's range
        non_finite = bad & ~np.isfinite(X) if X.dtype.kind == "f" else bad
        if non_finite.any():
            raise ValueError(
                f"Input X contains NaN or infinity: {int(non_finite.sum())} non-finite "
                f"pixel(s); the first is {_where(non_finite)}. Expected finite pixel values."
            )
        value = X[np.unravel_index(int(np.argmax(bad)), bad.shape)]
        value = np.format_float_scientific(value, precision=6, trim="-")  # longdouble too
        raise ValueError(
            f"Input X holds {int(bad.sum())} value(s) that overflow float32 (largest "
            f"magnitude {FLOAT32_MAX:.3g}); the first is {value} at {_where(bad)}. "
            "Expected pixel values within float32's range; rescale the data."
        )
    return crops


def _is_positive_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def is_number(value, low=-math.inf, high=math.inf, *, open_low=False):
    """Whether ``value`` is a finite real (not a bool) in ``[low, high]`` (``(low, high]`` with
    ``open_low``) that numpy holds as it is (Python and JSON integers are unbounded).

    Examples
    --------
    >>> from sklearn_deeploc.validation import is_number
    >>> is_number(0.5, 0, 1), is_number(True), is_number(float("nan")), is_number(2**70)
    (True, False, False, False)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if isinstance(value, numbers.Integral) and not -(2**63) <= value < 2**63:
        return False
    return math.isfinite(value) and (low < value if open_low else low <= value) and value <= high


def check_positive_int(value, name):
    """``value`` as an int, or a ValueError unless it is an integer >= 1 (True is not)."""
    if not _is_positive_int(value):
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def check_channels_first(shape, n_channels=None, *, what):
    """Refuse an image (C, H, W) or crops (n, C, H, W) whose last axis looks like the channels.

    A last axis of at most 8 after two longer ones is taken for channels, unless the channel
    axis already holds ``n_channels``.
    """
    channels, height, width = shape[-3:]
    if width <= MAX_CHANNELS_LAST < min(channels, height) and channels != n_channels:
        lead = "n, " * (len(shape) - 3)
        raise ValueError(
            f"{what} of shape {tuple(shape)} looks like channels last ({lead}H, W, C); expected "
            f"({lead}C, H, W), channels first. Use np.moveaxis({what}, -1, {len(shape) - 3})."
        )


def validate_crops(estimator, X, *, reset, n_channels, image_size, crop_size):
    """The estimators' input check: scikit-learn bookkeeping, then :func:`check_crops`.

    ``n_features_in_`` counts values per cell (``C * H * W``) whichever layout came; feature
    names are kept for DataFrames.
    """
    from sklearn.utils.validation import validate_data

    check = {"n_channels": n_channels, "image_size": image_size, "min_size": crop_size}
    if getattr(X, "ndim", None) == 2:  # the flat layout: columns (and their names) count
        validate_data(estimator, X, skip_check_array=True, reset=reset)
        return check_crops(X, **check)
    crops = check_crops(X, **check)
    side = crops.shape[2:]
    if side != (image_size, image_size):
        fix = f", or set image_size={side[0]}" if reset and side[0] == side[1] else ", as for fit"
        raise ValueError(
            f"Expected crops of {image_size}x{image_size} pixels (image_size={image_size}); "
            f"got {side[0]}x{side[1]}: crop the cells at {image_size} pixels{fix}."
        )
    validate_data(estimator, crops.reshape(len(crops), -1), skip_check_array=True, reset=reset)
    return crops


def check_channel_names(names, n_channels):
    """Check ``channel_names`` (None or one string per channel) before any long work."""
    names = list(names) if isinstance(names, (list, tuple)) else names
    if names is not None and not (
        isinstance(names, list)
        and len(names) == n_channels
        and all(isinstance(name, str) for name in names)
    ):
        raise ValueError(
            f"channel_names must name each of the {n_channels} channels of X with a string; "
            f"got {names!r}."
        )
    return names


def _label_kind(value):
    if isinstance(value, (str, np.str_)):
        return "str"
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, numbers.Number):
        return "number"
    return type(value).__name__


def mixed_kind(values):
    """pandas' kind of ``values`` where they mix types that table files cannot hold, else None.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_deeploc.validation import mixed_kind
    >>> mixed_kind(pd.Series(["1", 1])), mixed_kind(pd.Series(["a", None]))
    ('mixed-integer', None)
    """
    kind = pd.api.types.infer_dtype(values)
    return kind if kind in ("mixed", "mixed-integer") else None


def check_labels(y, *, name="y"):
    """Check class labels (or groups) of one type; return the sorted classes and int64 codes."""
    if y is None:
        raise ValueError(f"{name} is None; expected one label per cell.")
    from_sequence = not hasattr(y, "dtype")  # numpy would read ["ER", 3] as two strings
    y = column_or_1d(np.asarray(y, dtype=object if from_sequence else None), warn=True)
    if len(y) == 0:
        raise ValueError(f"{name} is empty; expected one label per cell.")
    missing = pd.isna(y)  # None, NaN, pd.NA and NaT alike
    if missing.any():
        first = int(np.argmax(missing))
        raise ValueError(
            f"{name} contains missing values (None or NaN): {int(missing.sum())} of "
            f"{len(y)}, the first at position {first} ({y[first]!r}). Expected a label "
            "for every cell; drop the unlabelled cells first."
        )
    if y.dtype.kind == "O":  # the one kind of array that can mix kinds of labels
        kinds = {}
        for value in y:
            kinds.setdefault(_label_kind(value), value)
        if len(kinds) > 1:
            examples = ", ".join(f"{kind} ({value!r})" for kind, value in kinds.items())
            raise ValueError(
                f"{name} mixes label types: {examples}. Expected labels of one type, "
                "all strings or all numbers."
            )
    if from_sequence:
        y = np.asarray(y.tolist())  # one kind: numpy's own dtype (str, int, float)
    classes, codes = np.unique(y, return_inverse=True)
    return classes, codes.astype(np.int64)


def available_memory():
    """Bytes of memory available now, or None where the platform cannot say."""
    try:
        import psutil
    except ImportError:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    return psutil.virtual_memory().available


NO_GROUPS = object()  # check_proba_table's default: the cells are not grouped


class NotEnoughMemoryError(ValueError):
    """Data that would not fit in the memory available now."""


def check_fits_memory(n_items, bytes_per_item, *, what, expected):
    """Raise :class:`NotEnoughMemoryError` unless ``n_items`` items fit in the memory available.

    ``what`` is the subject of the message; ``expected`` says what would fit, ``{fit}`` in it
    standing for how many items do.
    """
    needed, available = n_items * bytes_per_item, available_memory()
    if available is not None and needed > available:
        fit = max(available // bytes_per_item, 1)
        raise NotEnoughMemoryError(
            f"{what} needs {needed / 1e9:.3g} GB, but only {available / 1e9:.3g} GB of memory is "
            f"available; expected {expected.format(fit=fit)}."
        )


def check_batch_fits(batch_size, bytes_per_item, what="cells", n_items=None):
    """Return ``batch_size`` once it is a positive integer whose batch fits in memory.

    ``bytes_per_item`` counts an item's input and its activations; ``what`` names the items; a
    batch never holds more than ``n_items``, whatever ``batch_size`` says.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    batch = batch_size if n_items is None else min(batch_size, n_items)
    count = f"{batch} " if batch < batch_size else ""  # the data is smaller than a batch
    expected = f"batch_size <= {{fit}} (one batch of {count}{what}, {bytes_per_item} bytes each)"
    check_fits_memory(batch, bytes_per_item, what=f"batch_size={batch_size}", expected=expected)
    return batch_size


def _check_class_names(classes, shape, name):
    if np.ndim(classes) != 1:
        raise ValueError(f"classes must be a sequence of class names; got {classes!r}.")
    classes = list(classes)
    check_labels(classes, name="classes")
    if len(classes) != shape[1]:
        raise ValueError(
            f"{name} must have a column for each of the {len(classes)} class names, shape "
            f"(n_cells, {len(classes)}); got shape {shape}."
        )
    repeated = pd.Index(classes).duplicated()
    if repeated.any():
        raise ValueError(
            f"classes must be distinct; {classes[int(np.argmax(repeated))]!r} appears more "
            f"than once in {classes}."
        )
    return classes


def check_proba_table(
    proba, classes=None, *, name="proba", groups=NO_GROUPS, groups_name="groups", probabilities=True
):
    """Check per-cell class scores with their class names and groups: ``(proba, classes, groups)``.

    A DataFrame's columns are taken by name in the order of ``classes`` (default: its columns,
    else ``0 .. n_classes - 1``); ``probabilities`` requires rows in [0, 1] summing to 1;
    ``name`` and ``groups_name`` are for the messages. Groups given, None included, are checked.
    """
    if hasattr(proba, "columns"):
        # By name, never by position: the same classes in another order describe the same cells.
        columns = list(proba.columns)
        if len(set(columns)) < len(columns):
            raise ValueError(
                f"{name} has duplicated column names {columns}; expected one per class."
            )
        if classes is None:
            classes = columns
        elif set(columns) != set(classes):
            raise ValueError(
                f"{name} has the columns {columns}; expected the classes {list(classes)} "
                "(in any order)."
            )
        else:
            proba = proba[list(classes)]
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2 or proba.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n_cells, n_classes); got shape {proba.shape}.")
    if classes is None:
        classes = list(range(proba.shape[1]))
    else:
        classes = _check_class_names(classes, proba.shape, name)
    if groups is NO_GROUPS:
        groups = None
    else:
        labels, codes = check_labels(groups, name=groups_name)
        groups = labels[codes]
        if len(groups) != len(proba):
            raise ValueError(
                f"{groups_name} has {len(groups)} labels for the {len(proba)} rows of {name}; "
                "expected one per cell."
            )
    bad = ~np.isfinite(proba).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{name} has NaN or infinite values for {int(bad.sum())} cell(s), the first "
            f"is cell {int(np.argmax(bad))}; expected finite values for every cell "
            "(drop those cells or predict them again)."
        )
    if probabilities:  # logits or percentages passed by mistake give meaningless averages
        sums = proba.sum(axis=1)
        bad = (proba < 0).any(axis=1) | (proba > 1).any(axis=1) | ~np.isclose(sums, 1, atol=1e-3)
        if bad.any():
            first = int(np.argmax(bad))
            raise ValueError(
                f"{name} must hold probabilities (values in [0, 1], each row summing to 1), as "
                f"from predict_proba; {int(bad.sum())} row(s) do not, the first is cell {first} "
                f"(values from {proba[first].min():.3g} to {proba[first].max():.3g}, sum "
                f"{sums[first]:.3g}). Logits or decision_function scores are not probabilities."
            )
    return proba, classes, groups


class _Predicate(Options):
    """A constraint decided by ``is_satisfied_by`` (``make_constraint`` accepts Options only)."""

    def __init__(self):
        super().__init__(object, set())

    def __str__(self):
        return self.description


class PercentilePair(_Predicate):
    """Two percentiles ``(low, high)`` with ``0 <= low < high <= 100``."""

    description = "two percentiles (low, high) with 0 <= low < high <= 100"

    def is_satisfied_by(self, val):
        return (
            isinstance(val, (tuple, list))
            and len(val) == 2
            and all(isinstance(p, numbers.Real) and not isinstance(p, bool) for p in val)
            and 0 <= val[0] < val[1] <= 100
        )


class PositiveInt(_Predicate):
    """An integer >= 1; unlike ``Interval(Integral, 1, None)``, True is refused."""

    description = "a positive integer"
    is_satisfied_by = staticmethod(_is_positive_int)


class PositiveInts(_Predicate):
    """A non-empty tuple (or list) of positive integers, such as layer widths."""

    description = "a non-empty tuple of positive integers"

    def is_satisfied_by(self, val):
        return isinstance(val, (tuple, list)) and len(val) > 0 and all(map(_is_positive_int, val))


class DeviceName(_Predicate):
    """A torch device name; whether the device exists on this machine is for ``fit`` to find out."""

    description = "a device name among 'auto', 'cpu', 'cuda', 'cuda:N' (N >= 0) or 'mps'"
    _pattern = re.compile(r"auto|cpu|(mps|cuda)(:\d+)?")

    def is_satisfied_by(self, val):
        return isinstance(val, str) and self._pattern.fullmatch(val) is not None

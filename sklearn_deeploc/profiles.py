"""Per-cell and per-well profiles in pycytominer and AnnData conventions.

One row per cell: ``Metadata_`` columns as CellProfiler names them (``Metadata_Plate``,
``Metadata_Well`` "A01", ``Metadata_Site``, ``Metadata_ObjectNumber``,
``Metadata_Location_Center_X``/``_Y``, ``Metadata_Predicted_Class``), then the class
probabilities ``Cells_DeepLoc_Prob_<class>`` and features ``Cells_DeepLoc_<name>``. The
``Cells_`` compartment lets ``pycytominer`` infer the features without further arguments.
"""

import numbers
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ._files import write_atomically
from ._version import __version__
from .blocks import write_table
from .screen import abundance_changes, localization_changes
from .validation import check_proba_table, mixed_kind

FEATURE_PREFIX = "Cells_DeepLoc_"
PROBABILITY_PREFIX = FEATURE_PREFIX + "Prob_"
PREDICTED = "Metadata_Predicted_Class"
CELL_COUNT = "Metadata_Object_Count"  # pycytominer.aggregate's name for it
# Names of cells_from_labels and Plate.fields -> pycytominer's
METADATA = {
    "plate": "Metadata_Plate",
    "well": "Metadata_Well",
    "site": "Metadata_Site",
    "ObjectNumber": "Metadata_ObjectNumber",
    "center_x": "Metadata_Location_Center_X",
    "center_y": "Metadata_Location_Center_Y",
}
OPTIONAL_METADATA = {
    "image": "Metadata_Image",
    "area": "Metadata_Area",
    "padded": "Metadata_Padded",
    "label": "Metadata_Label",
    "acquisition": "Metadata_Acquisition",
}
WRITTEN = (PREDICTED, CELL_COUNT)  # what cell_profiles and well_profiles write
# The Metadata_ names of the profiles' own columns: never taken from a table's other metadata
OWN_METADATA = {*METADATA.values(), *OPTIONAL_METADATA.values(), *WRITTEN}
WELL_KEYS = ["Metadata_Plate", "Metadata_Well"]
TEXT_METADATA = (*WELL_KEYS, "Metadata_Image", PREDICTED)  # text in a CSV copy too ("2024")
ACQUISITION = OPTIONAL_METADATA["acquisition"]  # a plate's runs of imaging: wells kept apart
# A cell's mean intensity per channel, over its label: <prefix><channel name>
INTENSITY_PREFIX = "Metadata_MeanIntensity_"
# abundance_changes' columns as profile_changes names them
ABUNDANCE_COLUMNS = {
    "mean_a": "intensity_a",
    "mean_b": "intensity_b",
    "log2_ratio": "log2_abundance",
    "significant": "abundance_significant",
}
# profile_changes' columns but the one named by its by=
CHANGE_COLUMNS = (
    *("class", "t", "posterior", "significant", "n_cells_a", "n_cells_b", "status"),
    *ABUNDANCE_COLUMNS.values(),
)
CELLS_FILE, WELLS_FILE, H5AD_FILE = "cells.parquet", "wells.parquet", "cells.h5ad"


def _metadata(cells):
    """The cells' metadata columns under their ``Metadata_`` names, others prefixed too."""
    renamed = cells.rename(columns={**METADATA, **OPTIONAL_METADATA})
    absent = [name for name in METADATA.values() if name not in renamed]
    if absent:
        raise ValueError(
            f"cells lacks the metadata columns {absent}; expected {list(METADATA)} (or their "
            f"Metadata_ names), it has {list(cells.columns)}."
        )
    prefixed = {c: c if str(c).startswith("Metadata_") else f"Metadata_{c}" for c in renamed}
    metadata = renamed.rename(columns=prefixed).reset_index(drop=True)
    repeated = metadata.columns[metadata.columns.duplicated()].unique().tolist()
    if repeated:
        raise ValueError(
            f"cells gives the metadata columns {repeated} twice (its columns: "
            f"{list(cells.columns)}); expected each once, with or without its Metadata_ prefix."
        )
    written = [c for c in WRITTEN if c in metadata]
    if written:
        raise ValueError(
            f"cells already has {written}, which cell_profiles writes; expected the cells' "
            "metadata only (drop the columns of earlier profiles)."
        )
    missing = metadata[WELL_KEYS].isna().any(axis=1)
    if missing.any():
        raise ValueError(
            f"cells has {int(missing.sum())} row(s) without a plate or well, the first at row "
            f"{int(missing.to_numpy().argmax())}; expected both for every cell."
        )
    kinds = {c: mixed_kind(metadata[c]) for c in metadata}
    mixed = [c for c, kind in kinds.items() if kind]
    if mixed:
        raise ValueError(
            f"cells column {mixed[0]!r} mixes value types ({kinds[mixed[0]]}, for example '1' "
            "and 1), which parquet and .h5ad files cannot hold; expected one type per column."
        )
    return metadata


def _matrix(values, n_rows, n_columns, name):
    """``values`` as a finite float32 array of shape ``(n_rows, n_columns)``, or a ValueError."""
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused below
        values = np.asarray(values, dtype=np.float32)
    if values.shape != (n_rows, n_columns):
        raise ValueError(
            f"{name} has shape {values.shape}; expected ({n_rows}, {n_columns}): one row per "
            "cell, one column per name."
        )
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{name} has NaN, infinite or beyond-float32 values for {int(bad.sum())} cell(s), "
            f"the first is cell {int(bad.argmax())}; expected finite values for every cell."
        )
    return values


def cell_profiles(cells, proba, classes, features=None, feature_names=None):
    """One profile per cell: metadata, predicted class, class probabilities, features.

    Parameters
    ----------
    cells : pandas.DataFrame
        One row per cell with ``plate``, ``well`` ("A01"), ``site``, ``ObjectNumber``,
        ``center_x`` and ``center_y`` (as :attr:`sklearn_deeploc.plates.Plate.fields` and
        :func:`sklearn_deeploc.labels.cells_from_labels` name them), or their ``Metadata_``
        names. Other columns are kept as metadata, with a ``Metadata_`` prefix.
    proba : array-like of shape (n_cells, n_classes)
        Class probabilities (``predict_proba``).
    classes : sequence of n_classes names
        The classes, in the columns' order.
    features : array-like of shape (n_cells, n_features), optional
        Features (``DeepLocFeaturizer.transform``).
    feature_names : sequence of str, optional
        Their names (``get_feature_names_out()``); default ``feature_0``...

    Returns
    -------
    pandas.DataFrame
        The ``Metadata_`` columns, ``Metadata_Predicted_Class``, then float32
        ``Cells_DeepLoc_Prob_<class>`` and ``Cells_DeepLoc_<name>`` columns.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_deeploc.profiles import cell_profiles
    >>> cells = pd.DataFrame({"plate": "P1", "well": ["A01", "A01"], "site": 0,
    ...     "ObjectNumber": [1, 2], "center_x": [10.0, 30.5], "center_y": [4.0, 8.0]})
    >>> profiles = cell_profiles(cells, [[0.9, 0.1], [0.2, 0.8]], ["NUCLEI", "ER"])
    >>> profiles[["Metadata_ObjectNumber", "Metadata_Predicted_Class",
    ...     "Cells_DeepLoc_Prob_ER"]]
       Metadata_ObjectNumber Metadata_Predicted_Class  Cells_DeepLoc_Prob_ER
    0                      1                   NUCLEI                    0.1
    1                      2                       ER                    0.8
    """
    metadata = _metadata(cells)
    classes = [str(c) for c in classes]
    if len(set(classes)) < len(classes):
        raise ValueError(f"classes {classes} name a class twice; expected distinct names.")
    proba = _matrix(proba, len(metadata), len(classes), "proba")
    check_proba_table(proba)  # rows of probabilities: in [0, 1], summing to 1
    columns = {PREDICTED: np.asarray(classes, dtype=str)[proba.argmax(axis=1)]}  # str if none
    columns.update({PROBABILITY_PREFIX + c: proba[:, k] for k, c in enumerate(classes)})
    if features is not None:
        if feature_names is None:
            feature_names = [f"feature_{k}" for k in range(np.shape(features)[-1])]
        names = [str(name) for name in feature_names]
        features = _matrix(features, len(metadata), len(names), "features")
        if any(n.startswith("Prob_") for n in names) or len(set(names)) < len(names):
            raise ValueError(
                f"feature_names {names[:5]}... repeat a name or start with 'Prob_', which "
                "names class probability columns."
            )
        columns.update({FEATURE_PREFIX + n: features[:, k] for k, n in enumerate(names)})
    return pd.concat([metadata, pd.DataFrame(columns)], axis=1)


def _columns(profiles):
    """(metadata, probability, feature) column names of a profile table."""
    probability = [c for c in profiles.columns if c.startswith(PROBABILITY_PREFIX)]
    feature = [c for c in profiles.columns if c.startswith(FEATURE_PREFIX) and c not in probability]
    metadata = [c for c in profiles.columns if c.startswith("Metadata_")]
    return metadata, probability, feature


def _check_profiles(profiles, keys, name="profiles", classes=None):
    """Refuse a cell profile table without ``keys`` for every cell, without the ``classes``
    given, or with unusable values."""
    if not isinstance(profiles, pd.DataFrame):
        raise TypeError(f"{name} is a {type(profiles).__name__}; expected a pandas DataFrame.")
    columns = list(profiles.columns)
    odd = [c for c in columns if not isinstance(c, str)]
    repeated = sorted({c for c in columns if columns.count(c) > 1}, key=str)
    if odd or repeated:
        raise ValueError(
            f"{name} has {'non-text' if odd else 'repeated'} column names "
            f"{(odd or repeated)[:5]}; expected distinct names, as cell_profiles writes them."
        )
    _, probability, feature = _columns(profiles)
    absent = [key for key in keys if key not in profiles]
    if absent or not probability:
        raise ValueError(
            f"{name} has no column {(absent or [PROBABILITY_PREFIX + '<class>'])[0]!r}; "
            f"expected cell profiles (cell_profiles), its columns are {columns[:10]}..."
        )
    found = [c.removeprefix(PROBABILITY_PREFIX) for c in probability]
    if classes is not None and set(found) != set(classes):
        raise ValueError(
            f"The screens' classes differ: {name} has {found}, expected {classes}, the same "
            "model's classes."
        )
    missing = profiles[keys].isna().any(axis=1).to_numpy()
    if missing.any():
        raise ValueError(
            f"{name} has {int(missing.sum())} cell(s) without {' or '.join(keys)}, the first "
            f"at row {int(missing.argmax())}; expected a value for every cell."
        )
    check_proba_table(profiles[probability], name=f"{name} ({PROBABILITY_PREFIX}<class>)")
    _matrix(profiles[feature], len(profiles), len(feature), f"{name} ({FEATURE_PREFIX}<name>)")


def well_profiles(profiles, *, imaged=None, check_input=True):
    """Per plate and well: the mean of the cells' probabilities and features, and a count.

    Parameters
    ----------
    profiles : pandas.DataFrame
        Cell profiles (:func:`cell_profiles`).
    imaged : pandas.DataFrame, optional
        The fields imaged, one row each: ``plate`` and ``well`` (or their ``Metadata_``
        names; and the acquisition where the cells have one). A well of theirs without
        cells gets a row too: a count of 0, no predicted class, no means.
    check_input : bool, default=True
        Check ``profiles`` (a plate and well for every cell, probabilities, finite features)
        and ``imaged``; False only for tables already checked.

    Returns
    -------
    pandas.DataFrame
        ``Metadata_Plate``, ``Metadata_Well`` (and ``Metadata_Acquisition`` where the cells
        have it), ``Metadata_Object_Count`` (cells, as
        ``pycytominer.aggregate`` names it), ``Metadata_Predicted_Class`` (highest mean
        probability) and the mean of each ``Cells_DeepLoc_`` column.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_deeploc.profiles import cell_profiles, well_profiles
    >>> cells = pd.DataFrame({"plate": "P1", "well": ["A01", "A01", "B02"], "site": 0,
    ...     "ObjectNumber": [1, 2, 1], "center_x": 5.0, "center_y": 5.0})
    >>> proba = [[0.9, 0.1], [0.3, 0.7], [0.2, 0.8]]
    >>> wells = well_profiles(cell_profiles(cells, proba, ["NUCLEI", "ER"]))
    >>> wells[["Metadata_Well", "Metadata_Object_Count", "Metadata_Predicted_Class"]]
      Metadata_Well  Metadata_Object_Count Metadata_Predicted_Class
    0           A01                      2                   NUCLEI
    1           B02                      1                       ER

    A well imaged whose cells all died is counted, not left out:

    >>> imaged = pd.DataFrame({"plate": "P1", "well": ["A01", "B02", "C03"]})
    >>> wells = well_profiles(cell_profiles(cells, proba, ["NUCLEI", "ER"]), imaged=imaged)
    >>> wells[["Metadata_Well", "Metadata_Object_Count"]].to_numpy().tolist()
    [['A01', 2], ['B02', 1], ['C03', 0]]
    """
    keys = WELL_KEYS + [ACQUISITION] * (ACQUISITION in profiles)
    if imaged is not None:
        imaged = imaged.rename(columns={**METADATA, **OPTIONAL_METADATA})
    if check_input:
        _check_profiles(profiles, WELL_KEYS)
        if imaged is not None and not set(keys) <= set(imaged.columns):
            raise ValueError(
                f"imaged has the columns {list(imaged.columns)}; expected the wells' {keys}."
            )
    _, probability, feature = _columns(profiles)
    groups = profiles.groupby(keys, sort=True, observed=True, dropna=False)
    means = groups[probability + feature].mean().astype(np.float32)
    classes = np.array([c.removeprefix(PROBABILITY_PREFIX) for c in probability], dtype=object)
    means.insert(0, PREDICTED, classes[means[probability].to_numpy().argmax(axis=1)])
    means.insert(0, CELL_COUNT, groups.size())
    if imaged is not None:
        # As frames: two keys with a missing acquisition are one well, as in the groupby
        wells = pd.concat([means.index.to_frame(index=False), imaged[keys]]).drop_duplicates()
        means = means.reindex(pd.MultiIndex.from_frame(wells.sort_values(keys)))
        means[CELL_COUNT] = means[CELL_COUNT].fillna(0).astype(np.int64)
    return means.reset_index()


def _encode(node, kind, version="0.2.0", **attrs):
    """Tag an HDF5 group or dataset with its AnnData encoding; returns it."""
    node.attrs.update({"encoding-type": kind, "encoding-version": version, **attrs})
    return node


def _string_dataset(group, name, values, encoding="string-array"):
    """Text (one string or a list) as an AnnData string dataset."""
    data = np.asarray(values, dtype=object)
    _encode(group.create_dataset(name, data=data, dtype=h5py.string_dtype()), encoding)


def _array_dataset(group, name, values):
    """Numbers as an AnnData array dataset."""
    _encode(group.create_dataset(name, data=values), "array")


def _dataframe(group, name, index, columns):
    """A dataframe group (AnnData on-disk format): its index and columns by type."""
    frame = _encode(group.create_group(name), "dataframe", _index="_index")
    frame.attrs["column-order"] = list(columns)  # h5py stores a list of str as UTF-8 strings
    _string_dataset(frame, "_index", index)
    for column, values in columns.items():
        _column(frame, column, values)


def _column(frame, name, values):
    """One ``obs`` column in AnnData's encoding of its type, missing values kept missing."""
    dtype = values.dtype  # pandas' Int64 and boolean, Arrow's: not numpy's, nor sparse ones
    if (
        isinstance(dtype, pd.api.extensions.ExtensionDtype)
        and hasattr(dtype, "numpy_dtype")
        and dtype.kind in "iub"
    ):
        kind = "nullable-boolean" if dtype.kind == "b" else "nullable-integer"
        encoded = _encode(frame.create_group(name), kind, "0.1.0")
        filler = dtype.numpy_dtype.type(0)  # False for booleans
        _array_dataset(encoded, "values", values.to_numpy(dtype.numpy_dtype, na_value=filler))
        _array_dataset(encoded, "mask", values.isna().to_numpy())
    elif pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        missing = values.isna().any()  # nullable floats: NaN where missing
        _array_dataset(frame, name, values.to_numpy(dtype=float if missing else None))
    else:  # text (and anything else) as categories, a missing value as code -1
        categorical = pd.Categorical(values)
        encoded = _encode(frame.create_group(name), "categorical", ordered=categorical.ordered)
        _array_dataset(encoded, "codes", categorical.codes.astype(np.int32))
        categories = categorical.categories
        if categories.dtype.kind in "iuf":
            _array_dataset(encoded, "categories", categories.to_numpy())
        else:
            _string_dataset(encoded, "categories", [str(c) for c in categories])


def _uns_entry(group, name, value):
    """One ``uns`` entry: a string, a number, or a list of either."""
    if isinstance(value, str):
        _string_dataset(group, name, value, encoding="string")
    elif isinstance(value, (bool, np.bool_, numbers.Number)):
        _encode(group.create_dataset(name, data=value), "numeric-scalar")
    elif isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        _string_dataset(group, name, list(value))
    elif isinstance(value, (list, tuple, np.ndarray)) and np.asarray(value).dtype.kind in "biuf":
        _array_dataset(group, name, np.asarray(value))
    else:
        raise ValueError(
            f"uns[{name!r}] is {value!r}; expected a string, a number, or a list of either."
        )


def _write_anndata(path, profiles, uns):
    """Write ``profiles`` to the HDF5 file ``path`` in the AnnData on-disk format."""
    metadata, probability, feature = _columns(profiles)
    matrix = feature or probability  # X: the features, else the probabilities
    prefix = FEATURE_PREFIX if feature else PROBABILITY_PREFIX
    classes = [c.removeprefix(PROBABILITY_PREFIX) for c in probability]
    entries = {"classes": classes, "package_version": __version__, **(uns or {})}
    with h5py.File(path, "w") as file:
        _encode(file, "anndata", "0.1.0")
        _array_dataset(file, "X", profiles[matrix].to_numpy(dtype=np.float32))
        obs = profiles[metadata]
        if PREDICTED in obs:  # every class a category, also those no cell was given
            predicted = pd.Categorical(obs[PREDICTED].astype(str), categories=classes)  # 1: "1"
            obs = obs.assign(**{PREDICTED: predicted})
        _dataframe(file, "obs", [str(i) for i in range(len(profiles))], obs)
        _dataframe(file, "var", [c.removeprefix(prefix) for c in matrix], {})
        for name in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            _encode(file.create_group(name), "dict", "0.1.0")
        if feature:  # the probabilities, named by uns["classes"]
            _array_dataset(file["obsm"], "DeepLoc_Prob", profiles[probability].to_numpy(np.float32))
        for name, value in entries.items():
            _uns_entry(file["uns"], name, value)


def write_h5ad(profiles, path, *, uns=None, check_input=True):
    """Write cell profiles as an AnnData ``.h5ad`` file (atomically), without needing anndata.

    Parameters
    ----------
    profiles : pandas.DataFrame
        Cell profiles (:func:`cell_profiles`).
    path : path-like
        The ``.h5ad`` file.
    uns : dict, optional
        More unstructured entries (strings, numbers, lists of them), such as the model's
        digest; ``classes`` and ``package_version`` are always written, not taken from it.
    check_input : bool, default=True
        Check ``profiles`` and ``uns`` (as :func:`well_profiles` does, and no ``uns`` entry
        named as the package's); False only for profiles already checked.

    Returns
    -------
    pathlib.Path
        ``path``. ``X`` holds the features (float32), else the probabilities, and
        ``var_names`` their names; ``obs`` the ``Metadata_`` columns (text as categories);
        ``obsm["DeepLoc_Prob"]`` the probabilities when ``X`` holds features.

    Examples
    --------
    >>> import tempfile, h5py, pandas as pd
    >>> from pathlib import Path
    >>> from sklearn_deeploc.profiles import cell_profiles, write_h5ad
    >>> cells = pd.DataFrame({"plate": "P1", "well": ["A01", "B02"], "site": 0,
    ...     "ObjectNumber": [1, 1], "center_x": 5.0, "center_y": 5.0})
    >>> profiles = cell_profiles(cells, [[0.9, 0.1], [0.2, 0.8]], ["NUCLEI", "ER"])
    >>> path = write_h5ad(profiles, Path(tempfile.mkdtemp()) / "cells.h5ad")
    >>> with h5py.File(path) as file:
    ...     print(file["X"].shape, file["var/_index"].asstr()[:].tolist())
    (2, 2) ['NUCLEI', 'ER']
    """
    if check_input:
        _check_profiles(profiles, WELL_KEYS)
        _check_uns(uns)
    return write_atomically(path, lambda temporary: _write_anndata(temporary, profiles, uns))


def _check_uns(uns):
    """Refuse ``uns`` entries that would replace those the package writes."""
    taken = sorted({"classes", "package_version"} & set(uns or {}))
    if taken:
        raise ValueError(
            f"uns gives {taken}, which write_h5ad writes from the profiles and the package; "
            "expected other names."
        )


def read_h5ad_uns(path, keys):
    """The ``uns`` entries ``keys`` of an .h5ad file as Python values (strings, numbers).

    Parameters
    ----------
    path : path-like
        An ``.h5ad`` file (:func:`write_h5ad`, or anndata's own).
    keys : str or sequence of str
        The entries; one absent is a KeyError naming it, an empty one (``None``) is None.

    Returns
    -------
    dict
        The values by key: strings, numbers, booleans, or lists of them.

    Examples
    --------
    >>> import tempfile
    >>> import pandas as pd
    >>> from sklearn_deeploc.profiles import cell_profiles, read_h5ad_uns, write_h5ad
    >>> cells = pd.DataFrame({"plate": "P1", "well": ["A01"], "site": 0, "ObjectNumber": [1],
    ...     "center_x": [10.0], "center_y": [4.0]})
    >>> profiles = cell_profiles(cells, [[0.9, 0.1]], ["NUCLEI", "ER"])
    >>> path = write_h5ad(profiles, tempfile.mkdtemp() + "/cells.h5ad", uns={"tta": True})
    >>> read_h5ad_uns(path, ["classes", "tta"])
    {'classes': ['NUCLEI', 'ER'], 'tta': True}
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    with h5py.File(path, "r") as file:
        uns = file.get("uns", {})
        absent = [key for key in keys if key not in uns]
        if absent:
            raise KeyError(f"{path} has no uns entry {absent[0]!r}; it has {sorted(uns)}.")
        entries = {key: uns[key] for key in keys}
        groups = [key for key, entry in entries.items() if not isinstance(entry, h5py.Dataset)]
        if groups:
            raise TypeError(f"{path}: uns[{groups[0]!r}] is a group, not a value.")
        values = {
            key: (entry.asstr() if h5py.check_string_dtype(entry.dtype) else entry)[()]
            for key, entry in entries.items()
        }
    return {
        key: None if isinstance(value, h5py.Empty) else np.asarray(value).tolist()
        for key, value in values.items()
    }


def write_profiles(profiles, output, *, uns=None, imaged=None, csv=False, check_input=True):
    """Write ``cells.parquet``, ``wells.parquet`` and ``cells.h5ad`` to a folder, each atomically.

    Parameters
    ----------
    profiles : pandas.DataFrame
        Cell profiles (:func:`cell_profiles`).
    output : path-like
        The folder (made if absent).
    uns : dict, optional
        As in :func:`write_h5ad`.
    imaged : pandas.DataFrame, optional
        The fields imaged, as in :func:`well_profiles`.
    csv : bool, default=False
        Also write ``cells.csv`` and ``wells.csv``.
    check_input : bool, default=True
        Check ``profiles``, ``imaged`` (as :func:`well_profiles` does) and ``uns`` (no
        entry named as the package's); False only for tables already checked.

    Returns
    -------
    dict
        Paths by file name.
    """
    if check_input:
        _check_uns(uns)
    wells = well_profiles(profiles, imaged=imaged, check_input=check_input)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    tables = {CELLS_FILE: profiles, WELLS_FILE: wells}
    if csv:
        tables.update({"cells.csv": profiles, "wells.csv": tables[WELLS_FILE]})
    written = {name: write_table(table, output / name) for name, table in tables.items()}
    written[H5AD_FILE] = write_h5ad(profiles, output / H5AD_FILE, uns=uns, check_input=False)
    return written


def _probabilities(profiles, by, name, classes=None):
    """Screen ``name``'s probabilities, named by class (in the order of ``classes`` if given),
    and its ``by`` column, checked."""
    if not isinstance(by, str):
        raise ValueError(f"by must name one metadata column; got {by!r}.")
    _check_profiles(profiles, [by], f"Screen {name}", classes)
    for column in ("Metadata_Plate", ACQUISITION) if by == "Metadata_Well" else ():
        values = profiles[column].unique() if column in profiles else []
        noun = column.removeprefix("Metadata_").lower()
        if len(values) > 1:
            raise ValueError(
                f"Screen {name} holds {len(values)} {noun}s ({list(values)[:3]}...), whose "
                f"wells of one name hold different proteins or conditions; compare {noun} by "
                f"{noun}, or pass by= a column naming each cell's protein or strain."
            )
    if CELL_COUNT in profiles:
        raise ValueError(
            f"Screen {name} is a table of wells ({CELL_COUNT}); expected cell profiles "
            f"({CELLS_FILE}), one row per cell."
        )
    proba = profiles[_columns(profiles)[1]]
    proba = proba.rename(columns=lambda c: c.removeprefix(PROBABILITY_PREFIX))
    return proba if classes is None else proba[classes], profiles[by]


def profile_changes(profiles_a, profiles_b, *, by="Metadata_Well", prior=0.01):
    """Localization changes between two screens' cell profiles, per group of cells.

    :func:`~sklearn_deeploc.screen.localization_changes` on the cells' probabilities, grouped
    by a metadata column (the well, or a protein or strain column joined to the profiles).

    Parameters
    ----------
    profiles_a, profiles_b : pandas.DataFrame
        Cell profiles (:func:`cell_profiles`) of screen A (untreated) and B (treated).
    by : str, default="Metadata_Well"
        The column naming each cell's group.
    prior : float, default=0.01
        As in :func:`~sklearn_deeploc.screen.localization_changes`.

    Returns
    -------
    pandas.DataFrame
        :func:`~sklearn_deeploc.screen.localization_changes`'s table, ``protein`` named ``by``;
        where both screens measured their cells' intensity (``Metadata_MeanIntensity_<channel>``,
        from label images), each group's
        :func:`~sklearn_deeploc.screen.abundance_changes` in the first channel (the
        protein's) too: ``intensity_a``, ``intensity_b``, ``log2_abundance`` and
        ``abundance_significant``.
    """
    if by in CHANGE_COLUMNS:
        raise ValueError(
            f"by={by!r} would name two columns of the changes table {list(CHANGE_COLUMNS)}; "
            "rename that column of the profiles."
        )
    proba_a, groups_a = _probabilities(profiles_a, by, "A")
    proba_b, groups_b = _probabilities(profiles_b, by, "B", list(proba_a.columns))
    table = localization_changes(proba_a, groups_a, proba_b, groups_b, prior=prior)
    return _with_abundance(table.rename(columns={"protein": by}), profiles_a, profiles_b, by)


def _with_abundance(table, profiles_a, profiles_b, by):
    """``table`` with each group's abundance change, where both screens measured the first
    channel's intensity; a group without a positive mean intensity in both gets none."""
    screens = {"A": profiles_a, "B": profiles_b}
    found = {
        name: [c for c in p if str(c).startswith(INTENSITY_PREFIX)] for name, p in screens.items()
    }
    measured = [c for c in found["A"] if c in found["B"]]
    if not measured:
        if any(found.values()):
            alone = "A" if found["A"] else "B"
            warnings.warn(
                f"Only screen {alone} measured its cells' intensity (cells from label images): "
                "no abundance changes.",
                stacklevel=3,
            )
        return table
    column = measured[0]  # the first channel: the protein's
    cells = [p[[by, column]] for p in screens.values()]
    means = [c.groupby(by, observed=True)[column].mean() for c in cells]  # of measured cells
    shared = means[0].index.intersection(means[1].index)
    positive = [((m[shared] > 0) & np.isfinite(m[shared])).to_numpy() for m in means]
    usable = shared[positive[0] & positive[1]]
    if len(usable) < len(shared):
        warnings.warn(
            f"{len(shared) - len(usable)} of {len(shared)} group(s) have no positive mean "
            f"{column} in both screens: no abundance change for them.",
            stacklevel=3,
        )
    if usable.empty:
        return table
    a, b = (c[c[by].isin(usable)].dropna() for c in cells)
    abundance = abundance_changes(a[column], a[by], b[column], b[by])
    abundance = abundance.rename(columns={"protein": by, **ABUNDANCE_COLUMNS})
    return table.merge(abundance, on=by, how="left")

"""The package's long jobs as Python functions: train, predict, featurize, crop, screen.

Each job checks its inputs before computing, and a rerun resumes or refuses
(:mod:`sklearn_deeploc.blocks`); the ``deeploc`` command line only calls these.
"""

import json
import os
import shutil
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pandas.api.types import is_numeric_dtype
from tqdm.auto import tqdm

from .blocks import (
    ResumableOutput,
    check_table_path,
    file_identity,
    parts_folder,
    read_table,
    run_blocks,
    write_table,
)
from .checkpoints import checkpoint_lock
from .classifier import DeepLocClassifier, resolve_model
from .datasets import DeepLocHDF5Dataset, load_deeploc_hdf5, save_deeploc_hdf5
from .datasets._fetch import HDF5_SUFFIXES
from .datasets._hdf5 import one_hot_labels
from .featurizer import DeepLocFeaturizer
from .fields import (
    BORDER_POLICIES,
    TABLE_FILE,
    crop_cells,
    drop_repeated_cells,
    file_columns,
    read_cell_table,
)
from .inference import check_precision, resolve_device
from .model import CALIBRATION_CELLS
from .profiles import (
    CELL_COUNT,
    CELLS_FILE,
    H5AD_FILE,
    INTENSITY_PREFIX,
    TEXT_METADATA,
    WELLS_FILE,
    cell_profiles,
    profile_changes,
    read_h5ad_uns,
    write_profiles,
)
from .sources import WELL_PATTERN, FolderFields, PlateFields, Prefetched, TableFields
from .validation import check_labels, check_positive_int

PREDICTED_WITH = "predicted_with"  # a screen table's attrs: the model, precision and tta

DEFAULT_BLOCK = 4096
SCREEN_FILES = (CELLS_FILE, WELLS_FILE, "cells.csv", "wells.csv")
SCREEN_SIDE_FILES = (WELLS_FILE, H5AD_FILE, "cells.csv", "wells.csv")  # beside cells.parquet


def check_written_files(paths, cells=None, *, overwrite=False):
    """Refuse writing ``paths`` where the cell table ``cells`` was read from, or, unless
    ``overwrite``, where files exist.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from sklearn_deeploc.jobs import check_written_files
    >>> table = Path(tempfile.mkdtemp()) / "cells.csv"
    >>> _ = table.write_text("Image Path,Center_X,Center_Y")
    >>> check_written_files([table], overwrite=True)
    >>> check_written_files([table])
    Traceback (most recent call last):
    ...
    ValueError: ... exists; pass overwrite=True to replace it.
    """
    read_from = cells.attrs.get(TABLE_FILE) if isinstance(cells, pd.DataFrame) else cells
    for path in map(Path, paths):
        if read_from is not None and path.resolve() == Path(read_from).resolve():
            raise ValueError(
                f"The cell table {read_from} is where this job writes {path.name}; expected "
                "an output apart from the cell table."
            )
        if path.exists() and not overwrite:
            raise ValueError(f"{path} exists; pass overwrite=True to replace it.")


def _checked_job(model, data, output, block_size, device, precision):
    """The model, on the device ``precision`` runs on, and the cells of a job, checked up front."""
    check_table_path(output)  # before the model is fetched
    check_positive_int(block_size, "block_size")
    dataset = DeepLocHDF5Dataset(data)
    model = resolve_model(model)
    if dataset.n_channels != model.n_channels:  # before a block is read: a file claims any size
        raise ValueError(
            f"{data} holds cells of {dataset.n_channels} channel(s); the model takes "
            f"{model.n_channels} ({model.channel_names})."
        )
    return model.to(resolve_device(device, precision)), dataset


def probability_table(classes, proba):
    """One ``p_<class>`` column per class and the most probable ``label``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.jobs import probability_table
    >>> probability_table(np.array(["ER", "NUCLEI"]), np.array([[0.2, 0.8]])).columns.tolist()
    ['p_ER', 'p_NUCLEI', 'label']
    """
    frame = pd.DataFrame(proba, columns=[f"p_{c}" for c in classes])
    frame["label"] = np.asarray(classes)[np.asarray(proba).argmax(axis=1)]
    return frame


def block_table(estimator, data, start, stop):
    """Rows ``cell``, then probabilities or features, of cells ``start:stop`` of an HDF5 file."""
    X = DeepLocHDF5Dataset(data)[start:stop][0].numpy()
    if isinstance(estimator, DeepLocFeaturizer):
        frame = pd.DataFrame(estimator.transform(X), columns=estimator.get_feature_names_out())
    else:
        frame = probability_table(estimator.classes_, estimator.predict_proba(X))
    frame.insert(0, "cell", np.arange(start, stop))
    return frame


def _run_cell_blocks(estimator, data, output, block_size, overwrite, client, verbose):
    """Write ``block_table`` of every block of cells of ``data`` to ``output``, resumably."""
    manifest = {
        "job": "featurize" if isinstance(estimator, DeepLocFeaturizer) else "predict",
        "model": estimator.model_.digest(),
        "layer": getattr(estimator, "layer", None),
        "tta": estimator.tta,
        "precision": estimator.precision,
        "input": file_identity(data),
    }
    shipped = estimator if client is None else client.scatter(estimator, broadcast=True)
    # Class names in a CSV stay text ("007", "NA"); numbers stay numbers
    text = ["label"] if np.asarray(getattr(estimator, "classes_", [])).dtype.kind in "OUS" else []
    run_blocks(
        output,
        len(DeepLocHDF5Dataset(data)),
        block_size,
        block_table,
        shipped,
        os.path.abspath(data),  # Dask workers may start in another folder
        manifest=manifest,
        text=text,
        overwrite=overwrite,
        client=client,
        verbose=verbose,
    )
    if file_identity(data) != manifest["input"]:  # blocks reopen it: replaced, they mix files
        Path(output).unlink()
        raise ValueError(
            f"{data} changed during this run, so its blocks may come from two files; the "
            "output was removed. Run again with overwrite=True once the file stays as it is."
        )
    return read_table(output, text)


def predict(
    model,
    data,
    output,
    *,
    tta=None,
    batch_size=128,
    block_size=DEFAULT_BLOCK,
    device="auto",
    precision="fp32",
    overwrite=False,
    client=None,
    verbose=1,
):
    """Per-cell class probabilities and labels of a DeepLoc HDF5 file, written resumably.

    Parameters
    ----------
    model : str, path-like, DeepLocModel or fitted DeepLocClassifier
        A model folder or registered name (``"deeploc-chong"``).
    data : str or path-like
        A DeepLoc HDF5 file.
    output : str or path-like
        ``.csv`` or ``.parquet`` table: ``cell``, ``p_<class>`` ..., ``label``.
    tta : bool, optional
        Five-crop mean; None uses the model's stored choice.
    batch_size : int, default=128
    block_size : int, default=4096
        Cells per resumable block.
    device : str, default="auto"
    precision : {"fp32", "bf16", "fp16", "int8"}, default="fp32"
        Arithmetic of inference; int8 calibrates on the first cells of ``data``.
    overwrite : bool, default=False
        Start over when the output was made from another model, options or input (else refused).
    client : distributed.Client, optional
        Compute blocks on a Dask cluster.
    verbose : int, default=1

    Returns
    -------
    pandas.DataFrame
        The whole table, as written.
    """
    check_precision(precision, device)
    model, dataset = _checked_job(model, data, output, block_size, device, precision)
    if precision == "int8":
        model.calibrate(dataset[:CALIBRATION_CELLS][0].numpy())
    classifier = DeepLocClassifier.from_model(model)
    tta = model.preprocessing["tta"] if tta is None else tta
    classifier.set_params(tta=tta, batch_size=batch_size, device=device, precision=precision)
    classifier._validate_params()
    return _run_cell_blocks(classifier, data, output, block_size, overwrite, client, verbose)


def featurize(
    model,
    data,
    output,
    *,
    layer="fc2",
    tta=None,
    batch_size=128,
    block_size=DEFAULT_BLOCK,
    device="auto",
    precision="fp32",
    overwrite=False,
    client=None,
    verbose=1,
):
    """Per-cell DeepLoc features of a DeepLoc HDF5 file, written resumably.

    Parameters are those of :func:`predict`, plus ``layer`` ("fc2", "fc1", "conv8"); the
    table has ``cell`` and ``<layer>_<i>`` columns.

    Returns
    -------
    pandas.DataFrame
    """
    # the featurizer checks the precision, and calibrates int8, in fit
    model, dataset = _checked_job(model, data, output, block_size, device, precision)
    tta = model.preprocessing["tta"] if tta is None else tta
    featurizer = DeepLocFeaturizer(
        model, layer=layer, tta=tta, batch_size=batch_size, device=device, precision=precision
    ).fit(dataset[:CALIBRATION_CELLS][0].numpy())
    return _run_cell_blocks(featurizer, data, output, block_size, overwrite, client, verbose)


def checkpoint_folder(output):
    """Where :func:`train` keeps the checkpoints of a run that writes ``output``.

    Examples
    --------
    >>> from sklearn_deeploc.jobs import checkpoint_folder
    >>> checkpoint_folder("models/yeast").as_posix()
    'models/yeast.checkpoint'
    """
    output = Path(output)
    return output.with_name(output.name + ".checkpoint")


def train(data, output, *, overwrite=False, verbose=1, **params):
    """Train (or fine-tune) DeepLoc on a DeepLoc HDF5 file and write the model folder.

    Checkpoints go to :func:`checkpoint_folder`: the same job run again after an
    interruption resumes from the newest, one with other data or parameters is refused.

    Parameters
    ----------
    data : str or path-like
        A DeepLoc HDF5 file with labels.
    output : str or path-like
        The model folder to write (not a file, nor a folder with files in it unless
        ``overwrite``). A second training into it refuses while this one runs.
    overwrite : bool, default=False
    verbose : int, default=1
    **params
        :class:`DeepLocClassifier` parameters; ``checkpoint_dir`` defaults to the folder above.

    Returns
    -------
    DeepLocClassifier
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"Cannot write the model folder {output}: a file is there.")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ValueError(
            f"{output} exists and is not empty; pass overwrite=True to replace "
            "the model there, or choose another folder."
        )
    params = {"checkpoint_dir": str(checkpoint_folder(output)), **params}
    classifier = DeepLocClassifier(verbose=verbose, **params)
    classifier._validate_params()
    classifier._check_training()  # before the data is read
    output.parent.mkdir(parents=True, exist_ok=True)
    # The lock fit takes, held on until the checkpoint is removed: a run starting
    # in between would resume from a checkpoint about to go.
    folder = classifier.checkpoint_dir
    with checkpoint_lock(checkpoint_folder(output) if folder is None else folder):
        X, y = load_deeploc_hdf5(data)
        if y is None:
            raise ValueError(f"{data} has no labels (no Index<k> datasets): nothing to train on.")
        if verbose:
            print(f"{data}: {len(X)} cells, {X.shape[1]} channels, {len(np.unique(y))} classes")
        classifier.fit(X, y)
        classifier.save_pretrained(output)
        shutil.rmtree(classifier.checkpoint_dir, ignore_errors=True)
    return classifier


def _cell_table(cells):
    """``cells`` as :func:`read_cell_table` returns it (a file or raw table is read), each once."""
    name = f"The cell table {cells}" if isinstance(cells, (str, os.PathLike)) else "The cell table"
    is_read = isinstance(cells, pd.DataFrame) and {"field", "x", "y"} <= set(cells)
    if not (is_read and file_columns(cells)):
        cells = read_cell_table(cells)
    if not len(cells):
        raise ValueError(f"{name} has no cells.")
    return drop_repeated_cells(cells, name)


def field_source(
    *,
    cells=None,
    images=None,
    plate=None,
    labels=None,
    channels=None,
    marker=1,
    well_pattern=WELL_PATTERN,
    model=None,
):
    """The fields of a screen from exactly one of a cell table, a folder or a plate.

    Parameters are those of :func:`run_screen`; ``model`` gives the channel names read.

    Returns
    -------
    sklearn_deeploc.sources.FieldSource

    Examples
    --------
    A folder holding one field's two channels and its label image:

    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> import tifffile
    >>> from sklearn_deeploc.jobs import field_source
    >>> folder = Path(tempfile.mkdtemp())
    >>> for channel in ("ch1", "ch2"):
    ...     tifffile.imwrite(folder / f"r01c01f01-{channel}.tiff", np.zeros((80, 80), np.uint16))
    >>> labels = np.zeros((80, 80), np.uint16)
    >>> labels[30:40, 30:40] = 5
    >>> np.save(folder / "r01c01f01.npy", labels)
    >>> source = field_source(images=folder, labels=folder)
    >>> source.fields[["key", "well", "site"]]
                      key    well  site
    0  r01c01f01-ch1.tiff   A01     0
    >>> image, cells = source.read(source.keys[0])
    >>> image.shape, cells["ObjectNumber"].tolist(), cells["area"].tolist()
    ((2, 80, 80), [5], [100])
    """
    sources = {"cells": cells, "images": images, "plate": plate}
    given = [name for name, value in sources.items() if value is not None]
    if len(given) != 1:
        raise ValueError(
            "Expected one source of fields: cells= (a cell table), images= (a folder of "
            f"fields) or plate= (an OME-Zarr plate); got {given or 'none'}."
        )
    model_channels = None if model is None else model.channel_names
    if cells is not None:
        if labels is not None or channels is not None:
            raise ValueError(
                "A cell table names its own files, channels and cells (read_cell_table's "
                f"folder= and channels=); labels= and channels= are for images= or plate=; got "
                f"labels={labels!r}, channels={channels!r}."
            )
        return TableFields(_cell_table(cells), well_pattern, model_channels)
    if images is not None:
        return FolderFields(images, channels, labels, marker=marker, well_pattern=well_pattern)
    return PlateFields(plate, channels, labels, marker=marker, model_channels=model_channels)


def _cropped_cells(source, key, *, size=64, border="pad"):
    """Crops of one field's cells, and those cells with the field's metadata first."""
    image, cells = source.read(key)
    named = cells.set_axis([f"{key} object {n}" for n in cells["ObjectNumber"]])  # in warnings
    try:
        result = crop_cells(
            image, named, size, border=border, x_column="center_x", y_column="center_y"
        )
    except ValueError as error:  # crop_cells sees an array: name the field
        raise ValueError(f"Field {key}: {error}") from error
    metadata = source.metadata(key)
    kept = cells.iloc[result.index].assign(padded=result.padded, **metadata)
    # Each field's values in the type of all (a nullable acquisition: not NaN in one field)
    kept = kept.astype(
        {name: source.fields[name].dtype for name in metadata if name in source.fields}
    )
    return result.crops, kept[[*metadata, *cells.columns, "padded"]].reset_index(drop=True)


def _field_profiles(model, source, options, border, layer, key):
    """Profiles of the cells of one field: metadata, probabilities, features."""
    model = getattr(model, "model_", model)  # a classifier carries it to Dask workers
    crops, kept = _cropped_cells(source, key, border=border)
    intensity = {
        f"mean_intensity_{k}": INTENSITY_PREFIX + c for k, c in enumerate(model.channel_names)
    }
    kept = kept.rename(columns=intensity)  # named by the model's channels
    tta, batch_size, precision = options
    run = {"tta": tta, "batch_size": batch_size, "precision": precision, "check_input": False}
    if len(crops):
        try:
            crops = model.check_crops(crops)
        except ValueError as error:  # the crops are an array: name the field
            raise ValueError(f"Field {key}: {error}") from error
        proba = model.predict_proba(crops, **run)
        features = None if layer is None else model.features(crops, layer, **run)
    else:
        proba = np.empty((0, len(model.classes)), np.float32)
        features = None if layer is None else np.empty((0, model.feature_width(layer)))
    names = None if layer is None else [f"{layer}_{k}" for k in range(model.feature_width(layer))]
    return cell_profiles(kept, proba, model.classes, features, names)


def _calibration_crops(source, border):
    """int8 calibration cells: the first fields' crops, up to the calibration sample's size."""
    sample, n = [], 0
    for key in source.keys:
        sample.append(_cropped_cells(source, key, border=border)[0])
        n += len(sample[-1])
        if n >= CALIBRATION_CELLS:
            break
    if not n:
        raise ValueError("precision='int8' needs cells to calibrate on; no field had any.")
    return np.concatenate(sample)


def run_screen(
    model,
    output,
    *,
    cells=None,
    images=None,
    plate=None,
    labels=None,
    channels=None,
    marker=1,
    features=None,
    well_pattern=WELL_PATTERN,
    border="pad",
    tta=None,
    batch_size=128,
    device="auto",
    precision="fp32",
    csv=False,
    overwrite=False,
    client=None,
    verbose=1,
):
    """Find or read the cells of a screen's fields, predict them, and profile cells and wells.

    The fields come from one source (:func:`field_source`); cells come from label images or
    are found (:func:`~sklearn_deeploc.fields.find_cells`). Each field is one resumable part
    of ``<output>/cells.parquet``: a rerun after an interruption computes only the missing
    fields, and one with another model, input or option is refused unless ``overwrite``.

    Parameters
    ----------
    model : str, path-like, DeepLocModel or fitted DeepLocClassifier
    output : str or path-like
        Output folder: ``cells.parquet`` (one row per cell), ``wells.parquet`` (per plate
        and well) and ``cells.h5ad`` (AnnData), as :mod:`sklearn_deeploc.profiles` writes.
    cells : str, path-like or DataFrame, optional
        A cell table as :func:`~sklearn_deeploc.fields.read_cell_table` returns it
        (channels in the model's order), or a file or table it reads with its defaults.
        A row repeating an earlier one is the same cell: kept once, with a warning.
    images : str or path-like, optional
        A folder of fields whose channel images carry ``chN`` tokens.
    plate : str or path-like, optional
        An OME-Zarr HCS plate (NGFF 0.4 or 0.5).
    labels : str or path-like, optional
        With ``images``: a folder of label images named after each field's first channel
        file (``<stem>[_suffix].png``, ``.tif``, ``.npy``); with ``plate``: the name of the
        fields' label images. One cell per object; without labels, cells are found.
    channels : list, optional
        With ``images``: the ``chN`` tokens in the model's order (default ch1 ch2); with
        ``plate``: channel names or indices (default the model's channel names, or all
        channels where their number is the model's).
    marker : int, default=1
        The channel cells are found in, without labels.
    features : {"fc2", "fc1", "conv8"}, optional
        Also write this layer's activations as ``Cells_DeepLoc_<layer>_<k>``.
    well_pattern : str, optional
        Regular expression of the well in an image name of a table or folder, or of its group
        named ``well`` (default ``r\\d+c\\d+``, Opera's ``r02c03``, named ``B03`` as plates name
        wells); where none matches, the file's stem, with a warning.
    border : {"pad", "drop"}, default="pad"
    csv : bool, default=False
        Also write ``cells.csv`` and ``wells.csv``.
    tta, batch_size, device, precision, overwrite, client, verbose
        As in :func:`predict`; int8 calibrates on the first fields' cells, and a Dask
        ``client`` runs one task per field.

    Returns
    -------
    cells, wells : pandas.DataFrame
        The cell and well profiles written.

    Examples
    --------
    A field of two channel images and its label image (two cells):

    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> import tifffile
    >>> from sklearn_deeploc import DeepLocModel, DeepLocNet
    >>> from sklearn_deeploc.jobs import run_screen
    >>> folder = Path(tempfile.mkdtemp())
    >>> rng = np.random.default_rng(0)
    >>> for channel in ("ch1", "ch2"):
    ...     pixels = rng.integers(0, 4000, (128, 128), dtype=np.uint16)
    ...     tifffile.imwrite(folder / f"r01c01f01-{channel}.tiff", pixels)
    >>> labels = np.zeros((128, 128), np.uint16)
    >>> labels[20:40, 20:40], labels[70:90, 60:80] = 1, 2
    >>> (folder / "masks").mkdir()
    >>> np.save(folder / "masks" / "r01c01f01-ch1_cp_masks.npy", labels)
    >>> net = DeepLocNet(n_classes=2, conv_channels=(4,) * 8, fc_units=(8, 8))
    >>> model = DeepLocModel(net, ["ER", "NUCLEI"])
    >>> cells, wells = run_screen(
    ...     model, folder / "out", images=folder, labels=folder / "masks", verbose=0
    ... )
    >>> cells[["Metadata_Well", "Metadata_ObjectNumber", "Metadata_Location_Center_X"]]
      Metadata_Well  Metadata_ObjectNumber  Metadata_Location_Center_X
    0           A01                      1                        29.5
    1           A01                      2                        69.5
    >>> sorted(p.name for p in (folder / "out").glob("*.*"))
    ['cells.h5ad', 'cells.parquet', 'cells.parquet.parts', 'wells.parquet']
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"Output {output} is a file; expected a folder for the profiles.")
    model = resolve_model(model).to(resolve_device(device, precision))
    if features is not None:
        model.feature_width(features)
    options = model.check_inference_options(tta, batch_size, precision)
    source = field_source(
        cells=cells,
        images=images,
        plate=plate,
        labels=labels,
        channels=channels,
        marker=marker,
        well_pattern=well_pattern,
        model=model,
    )
    if border not in BORDER_POLICIES:
        raise ValueError(f"border must be one of {BORDER_POLICIES}; got {border!r}.")
    if source.n_channels not in (None, model.n_channels):
        raise ValueError(
            f"The fields are read with {source.n_channels} channel(s); the model takes "
            f"{model.n_channels} ({model.channel_names}). Choose them in the model's order: "
            "channels= (--channels), for a cell table read_cell_table's channels=."
        )
    side_files = [output / name for name in SCREEN_SIDE_FILES]
    check_written_files([output / CELLS_FILE, *side_files], cells, overwrite=True)
    # Files beside cells.parquet are an earlier screen's where its parts are there
    earlier = parts_folder(output / CELLS_FILE).exists()
    check_written_files(side_files, overwrite=overwrite or earlier)
    if precision == "int8":
        model.calibrate(_calibration_crops(source, border))
    # What the h5ad records, and the manifest with it (the digest hashes every weight: once).
    uns = {"model": model.digest(), "precision": precision, "tta": options[0]}
    inputs = {"features": features, "border": border, "source": source.identity()}
    manifest = {"job": "screen", **uns, **inputs}
    if verbose:
        read = ""
        if plate is not None:
            pairs = zip(source.channels, model.channel_names)
            read = "; channels " + ", ".join(f"{c} as {n}" for c, n in pairs)
        print(f"{len(source.keys)} fields{read}")
    output.mkdir(parents=True, exist_ok=True)
    cells_path = output / CELLS_FILE
    with ResumableOutput(
        cells_path, manifest, source.keys, unit="field", overwrite=overwrite, verbose=verbose
    ) as parts:
        if overwrite:  # what the previous run wrote beside cells.parquet goes with it
            for path in side_files:
                path.unlink(missing_ok=True)
        if client is None:  # read ahead where prediction leaves a core free (a GPU, spare CPUs)
            spare = model.device.type != "cpu" or torch.get_num_threads() < (os.cpu_count() or 1)
            with Prefetched(source, parts.pending()) if spare else nullcontext(source) as fields:
                parts.compute(_field_profiles, model, fields, options, border, features)
        else:
            # As a classifier, which a worker unpickles onto ``device`` (a model stays on the CPU).
            carrier = DeepLocClassifier.from_model(model)
            carrier.set_params(device=device, precision=precision)
            shipped = client.scatter([carrier, source], broadcast=True)
            parts.compute(_field_profiles, *shipped, options, border, features, client=client)
        _check_source_unchanged(source, inputs["source"], parts)
        profiles = parts.assemble()
        if not len(profiles):
            cells_path.unlink()
            raise ValueError(
                f"No cell in the {len(source.keys)} fields could be cropped (border={border!r}): "
                "none was found, or every centre lies outside its field or too close to its edge."
            )
        profiles.attrs[PREDICTED_WITH] = uns  # in cells.parquet, wherever it is copied
        # Under the lock: one run's files. The profiles were checked field by field.
        written = write_profiles(
            profiles, output, uns=uns, imaged=source.fields, csv=csv, check_input=False
        )
    return profiles, read_table(written[WELLS_FILE])


def _check_source_unchanged(source, identity, parts):
    """Refuse, discarding the parts, fields whose files changed while they were read."""
    try:
        changed = source.identity() != identity
    except OSError as error:  # no proof of a change (a passing network error): parts kept
        raise ValueError(
            f"The fields' files could not be checked at the end of this run ({error}); its "
            "parts were kept: run again once the files can be read."
        ) from error
    if changed:
        parts.discard()
        raise ValueError(
            "The fields' files changed during this run, so its cells may come from two versions "
            "of them; its parts were removed. Run again once the files stay as they are."
        )


def crop(
    output,
    *,
    cells=None,
    images=None,
    plate=None,
    labels=None,
    channels=None,
    marker=1,
    size=64,
    border="drop",
    overwrite=False,
    verbose=1,
):
    """From micrographs and their cells to a DeepLoc HDF5 training file.

    Parameters
    ----------
    output : str or path-like
        The HDF5 file to write (atomically), with label names when the cell table has
        a ``label`` column.
    cells, images, plate, labels, channels, marker
        The fields and their cells, as in :func:`run_screen`; only a cell table labels cells.
    size : int, default=64
    border : {"drop", "pad"}, default="drop"
        Cells whose box crosses the field's edge: dropped, or padded.
    overwrite : bool, default=False
        Replace an existing ``output``.
    verbose : int, default=1

    Returns
    -------
    pandas.DataFrame
        The cells kept, one row per crop in file order: ``plate``, ``well``, ``site``,
        ``image``, ``ObjectNumber``, ``center_x``, ``center_y``, ``padded`` (and ``area``,
        ``mean_intensity_<k>`` per channel, ``label`` where known).
    """
    output = Path(output)
    if output.suffix.lower() not in HDF5_SUFFIXES:
        raise ValueError(
            f"The output of crop is a DeepLoc HDF5 file; expected a name ending in "
            f"{list(HDF5_SUFFIXES)}, got {output}."
        )
    if output.exists() and not overwrite:
        raise ValueError(f"{output} exists; pass overwrite=True to replace it.")
    size = check_positive_int(size, "size")
    if border not in BORDER_POLICIES:
        raise ValueError(f"border must be one of {BORDER_POLICIES}; got {border!r}.")
    source = field_source(
        cells=cells, images=images, plate=plate, labels=labels, channels=channels, marker=marker
    )
    if isinstance(source, TableFields) and "label" in source.cells:
        labels = source.cells["label"]
        check_labels(labels, name="The label column of the cell table")
        one_hot_labels(labels.to_numpy(), None, len(labels))  # as the file takes them: now
    with tqdm(source.keys, unit="field", disable=not verbose) as keys:
        fields = [_cropped_cells(source, key, size=size, border=border) for key in keys]
    crops = np.concatenate([crops for crops, _ in fields])
    kept = pd.concat([kept for _, kept in fields], ignore_index=True)
    if not len(kept):
        raise ValueError(
            f"No cell of the {len(source.keys)} fields could be cropped (border={border!r})."
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    save_deeploc_hdf5(output, crops, kept["label"].to_numpy() if "label" in kept else None)
    if verbose:
        print(f"wrote {output}: {len(kept)} cells")
    return kept


def find_cell_table(images, *, channels=None, labels=None, marker=1, verbose=1):
    """A cell table of every field in a folder: the objects of its label images, or found.

    Fields are the images holding the first channel token; their other channels are found
    by substituting the token, as :func:`~sklearn_deeploc.fields.read_cell_table` does.

    Parameters
    ----------
    images, channels, labels, marker
        A folder of fields, its channel tokens and label images, as in :func:`run_screen`.
    verbose : int, default=1

    Returns
    -------
    pandas.DataFrame
        Columns ``Image Path``, ``Center_X``, ``Center_Y``, ``ObjectNumber``
        (and ``Area`` from label images): one row per cell.
    """
    source = FolderFields(images, channels, labels, marker=marker, well_pattern=None)  # no wells
    stacks = [key for key, planes in source.planes.items() if len(planes) > 1]
    if stacks:  # a table names one file per channel: its reader would take the first plane
        raise ValueError(
            f"{len(stacks)} field(s) of {images} have z planes ({stacks[0]}...), which a cell "
            "table cannot name; screen or crop the folder itself (images=), which projects them."
        )
    renamed = {"center_x": "Center_X", "center_y": "Center_Y", "area": "Area"}
    rows = []
    for key in source.keys:
        cells = source.read(key)[1].rename(columns=renamed)
        cells.insert(0, "Image Path", key)
        rows.append(cells)
        if verbose:
            print(f"{key}: {len(cells)} cells")
    return pd.concat(rows, ignore_index=True)


def _cells_path(screen):
    """The ``cells.parquet`` of a screen output folder (or the file itself)."""
    path = Path(screen)
    if path.is_dir():  # its cells.parquet, else its CSV copy
        path = path / CELLS_FILE if (path / CELLS_FILE).exists() else path / "cells.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"Screen output {path} not found; expected a {CELLS_FILE} (or its cells.csv copy)."
        )
    if path.suffix not in (".parquet", ".csv"):
        raise ValueError(f"Screen output {path} is not a cell table; expected a {CELLS_FILE}.")
    return path


def _read_screens(paths, by):
    """``{name: (path, table)}`` of two screens' cell tables, metadata as written ("007"), and
    ``by`` as text in both where one screen's reads as numbers and the other's as text."""

    def metadata(column):
        return column.startswith("Metadata_") or column == by

    screens = {
        name: (path, read_table(path, TEXT_METADATA, as_written=metadata))
        for name, path in paths.items()
    }
    by_in = [table[by] for _, table in screens.values() if isinstance(by, str) and by in table]
    if len({is_numeric_dtype(column) for column in by_in}) > 1:  # codes 1..29 and X29
        screens = {name: (path, _by_as_text(path, t, by)) for name, (path, t) in screens.items()}
    return screens


def _by_as_text(path, table, by):
    """``table`` with its ``by`` column as text: as written in a CSV, else its numbers'."""
    if not is_numeric_dtype(table[by]):
        return table
    if path.suffix == ".csv":
        return table.assign(**{by: read_table(path, text=[by])[by]})
    return table.assign(**{by: table[by].astype(str)})


def _wells_without_cells(path):
    """The wells a screen imaged but found no cell in (a count of 0 in the wells.parquet beside
    its cells), else none."""
    if path.name not in (CELLS_FILE, "cells.csv"):
        return set()
    try:
        wells = read_table(
            path.with_name(WELLS_FILE if path.suffix == ".parquet" else "wells.csv"), TEXT_METADATA
        )
        return set(wells.loc[wells[CELL_COUNT] == 0, "Metadata_Well"])
    except (OSError, ValueError, KeyError, ImportError):  # none, or not the package's
        return set()


def _recorded_predictions(path, table):
    """Those of the model, precision and tta a screen's cells were predicted with that its table
    records (run_screen's parquet), else its folder (its manifest, else its .h5ad); none for a
    table from elsewhere."""
    keys = ("model", "precision", "tta")
    if isinstance(recorded := table.attrs.get(PREDICTED_WITH), dict):
        return {key: recorded[key] for key in keys if key in recorded}
    if path.name not in (CELLS_FILE, "cells.csv"):
        return {}
    manifest = parts_folder(path.with_name(CELLS_FILE)) / "manifest.json"
    try:
        recorded = json.loads(manifest.read_text())["depends_on"]
        return {key: recorded[key] for key in keys if key in recorded}
    except (OSError, ValueError, KeyError, TypeError):  # no manifest: the .h5ad's records
        recorded = {}
    for key in keys:  # one by one: an entry absent or shaped by another writer is skipped
        try:
            recorded.update(read_h5ad_uns(path.with_name(H5AD_FILE), key))
        except (OSError, KeyError, TypeError, ValueError):
            pass
    return recorded


def _check_same_predictions(screens):
    """Refuse two screens (``{name: (path, table)}``) recorded as predicted by another model,
    precision or tta; return a warning where one does not record how, else None."""
    (a, path_a), (b, path_b) = [
        (_recorded_predictions(path, table), path) for path, table in screens.values()
    ]
    if any(a[key] != b[key] for key in a.keys() & b.keys()):
        raise ValueError(
            f"Screens A and B were predicted differently (A: {a}; B: {b}); their "
            "probabilities are not comparable. Screen both with the same model, precision "
            "and tta."
        )
    unrecorded = [str(path) for path, recorded in ((path_a, a), (path_b, b)) if not recorded]
    if unrecorded:
        return (
            f"No record of the model that predicted {' and '.join(unrecorded)} (a screen's "
            "cells.parquet has one): make sure both screens were predicted by the same model, "
            "precision and tta."
        )
    return None


def write_changes(screen_a, screen_b, output, *, by="Metadata_Well", prior=0.01):
    """Compare two screen outputs' ``cells.parquet`` and write the changes table.

    Parameters
    ----------
    screen_a, screen_b : path-like
        Screen output folders (or their ``cells.parquet`` or ``cells.csv`` files): A
        untreated, B treated.
    output : path-like
        The table to write (atomically): ``.parquet`` or ``.csv``.
    by, prior
        As in :func:`~sklearn_deeploc.profiles.profile_changes`.

    Returns
    -------
    pandas.DataFrame
        The table written (:func:`~sklearn_deeploc.profiles.profile_changes`); screens whose
        tables or manifests (else ``cells.h5ad``) record another model, precision or tta are
        refused. By well, a well a screen imaged without finding a cell (a count of 0 in its
        ``wells.parquet``) has the status ``"no cells in screen A"`` (or B).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> import pandas as pd
    >>> from sklearn_deeploc.jobs import write_changes
    >>> from sklearn_deeploc.profiles import cell_profiles, write_profiles
    >>> folder, rng = Path(tempfile.mkdtemp()), np.random.default_rng(0)
    >>> cells = pd.DataFrame({"plate": "P1", "well": np.repeat(["A01", "A02"], 20), "site": 0,
    ...     "ObjectNumber": np.tile(np.arange(1, 21), 2), "center_x": 5.0, "center_y": 5.0})
    >>> for name in ("untreated", "treated"):
    ...     proba = rng.dirichlet([5, 5], len(cells))
    ...     _ = write_profiles(cell_profiles(cells, proba, ["ER", "NUCLEI"]), folder / name)
    >>> table = write_changes(folder / "untreated", folder / "treated", folder / "changes.csv")
    >>> sorted(set(table["Metadata_Well"])), (folder / "changes.csv").is_file()
    (['A01', 'A02'], True)
    """
    check_table_path(output)
    path_a, path_b = _cells_path(screen_a), _cells_path(screen_b)
    inputs = {path.resolve() for path in (path_a, path_b)}
    written = Path(output).resolve()
    screen_file = (
        written.parent in {path.parent for path in inputs} and written.name in SCREEN_FILES
    )
    if written in inputs or screen_file:
        raise ValueError(
            f"output={output} is a file of a screen compared; expected a table of its own."
        )
    screens = _read_screens({"A": path_a, "B": path_b}, by)
    unrecorded = _check_same_predictions(screens)
    table = profile_changes(screens["A"][1], screens["B"][1], by=by, prior=prior)
    if unrecorded:  # after the tables' own checks: no warning before an error
        warnings.warn(unrecorded, stacklevel=2)
    if by == "Metadata_Well":  # a well whose cells all died is a change, not a well not imaged
        for name, other, path in (("A", "B", path_a), ("B", "A", path_b)):
            died = table[by].isin(_wells_without_cells(path))
            table.loc[died & (table["status"] == f"only in screen {other}"), "status"] = (
                f"no cells in screen {name}"
            )
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    write_table(table, output)
    return table

"""The package's long jobs as Python functions: train, predict, featurize, crop, screen.

Each job checks its inputs before computing, and a rerun resumes or refuses
(:mod:`sklearn_deeploc.blocks`); the ``deeploc`` command line only calls these.
"""

import hashlib
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .blocks import (
    ResumableOutput,
    check_table_path,
    file_identity,
    read_table,
    run_blocks,
    write_table,
)
from .checkpoints import checkpoint_lock
from .classifier import DeepLocClassifier, resolve_model
from .datasets import DeepLocHDF5Dataset, load_deeploc_hdf5, save_deeploc_hdf5
from .datasets._fetch import HDF5_SUFFIXES
from .featurizer import DeepLocFeaturizer
from .fields import (
    check_image_files,
    crop_fields,
    drop_repeated_cells,
    file_columns,
    find_cells,
    iter_field_crops,
    read_cell_table,
    read_field,
)
from .inference import check_precision
from .model import CALIBRATION_CELLS
from .screen import aggregate
from .validation import check_labels, check_positive_int

DEFAULT_BLOCK = 4096


def _first_cells(dataset):
    return dataset[:CALIBRATION_CELLS][0].numpy()


def _model_for(model, device, precision, dataset):
    """The model to predict with, calibrated on the input's first cells for int8."""
    check_precision(precision, device)  # before any output is written
    model = resolve_model(model).to(device)
    if precision == "int8":
        model.calibrate(_first_cells(dataset))
    return model


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


def _run_cell_blocks(estimator, data, output, job, *, block_size, overwrite, client, verbose):
    manifest = {
        "job": job,
        "model": estimator.model_.digest(),
        "layer": getattr(estimator, "layer", None),
        "tta": estimator.tta,
        "precision": estimator.precision,
        "input": file_identity(data),
    }
    shipped = estimator if client is None else client.scatter(estimator, broadcast=True)
    run_blocks(
        output,
        len(DeepLocHDF5Dataset(data)),
        block_size,
        block_table,
        shipped,
        str(data),
        manifest=manifest,
        overwrite=overwrite,
        client=client,
        verbose=verbose,
    )
    return read_table(output)


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
        Start over when the output was made from another model, options or
        input (otherwise such a rerun is refused).
    client : distributed.Client, optional
        Compute blocks on a Dask cluster.
    verbose : int, default=1

    Returns
    -------
    pandas.DataFrame
        The whole table, as written.
    """
    check_table_path(output)  # before the model is fetched
    check_positive_int(block_size, "block_size")
    dataset = DeepLocHDF5Dataset(data)
    classifier = DeepLocClassifier.from_model(_model_for(model, device, precision, dataset))
    classifier.set_params(
        tta=classifier.tta if tta is None else tta,
        batch_size=batch_size,
        device=device,
        precision=precision,
    )
    classifier._validate_params()
    return _run_cell_blocks(
        classifier,
        data,
        output,
        "predict",
        block_size=block_size,
        overwrite=overwrite,
        client=client,
        verbose=verbose,
    )


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

    Parameters are those of :func:`predict`, plus ``layer`` ("fc2", "fc1",
    "conv8"); the table has ``cell`` and ``<layer>_<i>`` columns. With
    ``precision="int8"`` the featurizer is calibrated on the first cells of
    ``data``.

    Returns
    -------
    pandas.DataFrame
    """
    check_table_path(output)  # before the model is fetched
    check_positive_int(block_size, "block_size")
    dataset = DeepLocHDF5Dataset(data)
    model = _model_for(model, device, "fp32", dataset)
    tta = model.preprocessing["tta"] if tta is None else tta
    featurizer = DeepLocFeaturizer(
        model,
        layer=layer,
        tta=tta,
        batch_size=batch_size,
        device=device,
        precision=precision,
    ).fit(_first_cells(dataset))
    return _run_cell_blocks(
        featurizer,
        data,
        output,
        "featurize",
        block_size=block_size,
        overwrite=overwrite,
        client=client,
        verbose=verbose,
    )


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

    Checkpoints go to :func:`checkpoint_folder` every ``checkpoint_interval``
    steps; the same job run again after an interruption resumes from the
    newest, and a rerun with other data or parameters is refused. The folder
    is written when training finished; the checkpoint is then removed.

    Parameters
    ----------
    data : str or path-like
        A DeepLoc HDF5 file with labels.
    output : str or path-like
        The model folder to write (not a file, nor a folder with files in it
        unless ``overwrite``). A second training into it refuses while this
        one runs.
    overwrite : bool, default=False
    verbose : int, default=1
    **params
        :class:`DeepLocClassifier` parameters (``checkpoint_interval``
        included; ``checkpoint_dir`` defaults to :func:`checkpoint_folder`).

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
    resolve_model(classifier.pretrained)  # a bad pretrained model fails before the data is read
    output.parent.mkdir(parents=True, exist_ok=True)
    # The lock fit takes, held on until the checkpoint is removed: a run starting
    # in between would resume from a checkpoint about to go.
    with checkpoint_lock(classifier.checkpoint_dir or checkpoint_folder(output)):
        _train_and_save(classifier, data, output, verbose)
    return classifier


def _train_and_save(classifier, data, output, verbose):
    X, y = load_deeploc_hdf5(data)
    if y is None:
        raise ValueError(f"{data} has no labels (no Index<k> datasets): nothing to train on.")
    if verbose:
        print(f"{data}: {len(X)} cells, {X.shape[1]} channels, {len(np.unique(y))} classes")
    classifier.fit(X, y)
    classifier.save_pretrained(output)
    shutil.rmtree(classifier.checkpoint_dir, ignore_errors=True)


def _images_identity(cells):
    """Size and modification time of every image file: a replaced image changes it."""
    files = sorted({path for column in file_columns(cells) for path in cells[column]})
    check_image_files(files)
    stats = [(str(path), os.stat(path).st_size, os.stat(path).st_mtime_ns) for path in files]
    return hashlib.sha256(repr(stats).encode()).hexdigest()


def _cell_table(cells):
    """``cells`` as :func:`read_cell_table` returns it (a file or raw table is read), each once."""
    if cells is None:
        raise ValueError("Expected a cell table as cells= (a file or a DataFrame); got None.")
    name = f"The cell table {cells}" if isinstance(cells, (str, os.PathLike)) else "The cell table"
    is_read = isinstance(cells, pd.DataFrame) and {"field", "x", "y"} <= set(cells)
    if not (is_read and file_columns(cells)):
        cells = read_cell_table(cells)
    if not len(cells):
        raise ValueError(f"{name} has no cells.")
    return drop_repeated_cells(cells, name)


def _well(field, pattern):
    match = re.search(pattern, Path(field).name)
    return match.group(0) if match else Path(field).stem


def _warn_unmatched_wells(fields, pattern):
    names = [Path(field).name for field in fields]
    unmatched = [name for name in names if not re.search(pattern, name)]
    if unmatched:
        warnings.warn(
            f"well_pattern {pattern!r} finds no well in {len(unmatched)} of {len(names)} "
            f"image names (for example {unmatched[0]!r}); each of those fields is a well of "
            "its own, named by its file's stem. Pass a well_pattern matching the well in "
            "these names.",
            UserWarning,
            stacklevel=3,
        )


def _field_table(classifier, fields, well_pattern, border, field):
    """Cells of one field: position, well, padding, then the probability columns."""
    crops, kept = next(iter_field_crops(fields[field], border=border))
    table = pd.DataFrame(
        {
            "image": field,
            "well": _well(field, well_pattern),
            "x": kept["x"].to_numpy(),
            "y": kept["y"].to_numpy(),
            "padded": kept["padded"].to_numpy(),
        }
    )
    if len(crops):
        proba = classifier.predict_proba(crops)
        table = pd.concat([table, probability_table(classifier.classes_, proba)], axis=1)
    return table


def _calibration_crops(cells, border):
    """int8 calibration cells: the first fields' crops, up to the calibration sample's size."""
    sample, n = [], 0
    for crops, _ in iter_field_crops(cells, border=border):
        sample.append(crops)
        n += len(crops)
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
    well_pattern=r"r\d+c\d+",
    border="pad",
    device="auto",
    precision="fp32",
    overwrite=False,
    verbose=1,
):
    """Crop the cells of a screen's fields, predict them, and aggregate them per well.

    Each field is one resumable part of ``<output>/cells.csv``: a rerun after
    an interruption computes only the missing fields, and a rerun with
    another model or options is refused unless ``overwrite``.

    Parameters
    ----------
    model : str, path-like, DeepLocModel or fitted DeepLocClassifier
    output : str or path-like
        Output folder: ``cells.csv`` (one row per cell) and ``wells.csv``.
    cells : str, path-like or DataFrame
        The cell table, as :func:`~sklearn_deeploc.fields.read_cell_table`
        returns it (channels in the model's order); a file or another table
        is read by it with its defaults. A row repeating an earlier one is
        the same cell: kept once, with a warning.
    well_pattern : str, default=r"r\\d+c\\d+"
        Regular expression of the well in an image name (else its stem, with
        a warning naming an image name it finds no well in).
    border : {"pad", "drop"}, default="pad"
    device : str, default="auto"
    precision : {"fp32", "bf16", "fp16", "int8"}, default="fp32"
        Arithmetic of inference; int8 calibrates on the cells of the first fields.
    overwrite : bool, default=False
    verbose : int, default=1

    Returns
    -------
    cells, wells : pandas.DataFrame
    """
    cells = _cell_table(cells)
    try:
        re.compile(well_pattern)
    except re.error as error:
        raise ValueError(
            f"well_pattern {well_pattern!r} is not a regular expression: {error}."
        ) from error
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(
            f"Output {output} is a file; expected a folder for cells.csv and wells.csv."
        )
    fields = dict(tuple(cells.groupby("field", sort=False)))
    _warn_unmatched_wells(fields, well_pattern)
    check_precision(precision, device)
    model = resolve_model(model).to(device)
    if precision == "int8":
        model.calibrate(_calibration_crops(cells, border))
    output.mkdir(parents=True, exist_ok=True)
    classifier = DeepLocClassifier.from_model(model).set_params(device=device, precision=precision)
    manifest = {
        "job": "screen",
        "model": classifier.model_.digest(),
        "precision": precision,
        "cells": pd.util.hash_pandas_object(cells, index=False).sum().item(),
        "images": _images_identity(cells),
        "well_pattern": well_pattern,
        "border": border,
    }
    if verbose:
        print(f"{len(cells)} cells in {len(fields)} fields")
    with ResumableOutput(
        output / "cells.csv", manifest, fields, unit="field", overwrite=overwrite, verbose=verbose
    ) as parts:
        parts.compute(_field_table, classifier, fields, well_pattern, border)
        cells_table = parts.assemble()
    columns = [f"p_{c}" for c in classifier.classes_]
    if not set(columns) <= set(cells_table.columns):  # no field had a cell to predict
        raise ValueError(
            f"None of the {len(cells)} cells could be cropped (border={border!r}): every "
            "centre lies outside its field or too close to its edge."
        )
    scored = cells_table.dropna(subset=columns)
    wells = aggregate(scored[columns].to_numpy(), scored["well"].to_numpy(), columns)
    wells["label"] = classifier.classes_[wells[columns].to_numpy().argmax(axis=1)]
    wells = wells.rename_axis("well").reset_index()  # the column name of cells.csv
    write_table(wells, output / "wells.csv")
    return cells_table, wells


def crop(
    output,
    *,
    cells=None,
    images=None,
    channels=None,
    size=64,
    border="drop",
    overwrite=False,
    verbose=1,
):
    """From micrographs and a table of cell centres to a DeepLoc HDF5 training file.

    Parameters
    ----------
    output : str or path-like
        The HDF5 file to write (atomically), with label names when the cell
        table has a ``label`` column.
    cells : str, path-like or DataFrame, optional
        The cell table, as for :func:`run_screen`.
    images : str or path-like, optional
        Without ``cells``: a folder whose fields' cells are found by
        :func:`find_cell_table`, with ``channels`` its channel tokens.
    channels : list of str, optional
    size : int, default=64
    border : {"drop", "pad"}, default="drop"
        Cells whose box crosses the field's edge: dropped, or padded.
    overwrite : bool, default=False
        Replace an existing ``output``.
    verbose : int, default=1

    Returns
    -------
    pandas.DataFrame
        The cells kept, one row per crop written, in file order.
    """
    output = Path(output)
    if output.suffix.lower() not in HDF5_SUFFIXES:
        raise ValueError(
            f"The output of crop is a DeepLoc HDF5 file; expected a name ending in "
            f"{list(HDF5_SUFFIXES)}, got {output}."
        )
    if output.exists() and not overwrite:
        raise ValueError(f"{output} exists; pass overwrite=True to replace it.")
    if cells is None:
        if images is None:
            raise ValueError("crop needs cells= (a cell table) or images= (a folder of fields).")
        found = find_cell_table(images, channels=channels, verbose=verbose)
        cells = read_cell_table(found, layout="token", channels=channels, folder=images)
    elif images is not None or channels is not None:
        raise ValueError(
            "images= and channels= are for finding cells; a cell table names its own files "
            f"and channels (read_cell_table's folder= and channels=); got images={images!r}, "
            f"channels={channels!r}."
        )
    cells = _cell_table(cells)
    labelled = "label" in cells
    if labelled:
        check_labels(cells["label"], name="The label column of the cell table")
    crops, kept = crop_fields(cells, size=size, border=border, verbose=verbose)
    if not len(crops):
        raise ValueError(f"None of the {len(cells)} cells could be cropped (border={border!r}).")
    save_deeploc_hdf5(output, crops, kept["label"].to_numpy() if labelled else None)
    if verbose:
        print(f"wrote {output}: {len(crops)} of {len(cells)} cells")
    return kept


def find_cell_table(images, *, channels=None, marker=1, verbose=1):
    """A cell table of every field in a folder, with centres found by :func:`find_cells`.

    Fields are the images whose name holds the first channel token (default
    ``ch1``); their other channels are found by substituting the token, as in
    the token layout of :func:`~sklearn_deeploc.fields.read_cell_table`.

    Parameters
    ----------
    images : str or path-like
        Folder of the fields' channel images.
    channels : list of str, optional
        Channel tokens in the model's order (default ``["ch1", "ch2"]``).
    marker : int, default=1
        Index in ``channels`` of the whole-cell marker that cells are found in.
    verbose : int, default=1

    Returns
    -------
    pandas.DataFrame
        Columns ``Image Path``, ``Center_X``, ``Center_Y``: one row per cell.
    """
    channels = channels or ["ch1", "ch2"]
    names = sorted(p.name for p in Path(images).iterdir() if re.search(channels[0], p.name))
    if not names:
        raise ValueError(f"No image in {images} has the channel token {channels[0]!r}.")
    fields = read_cell_table(
        pd.DataFrame({"Image Path": names, "Center_X": 0, "Center_Y": 0}),
        layout="token",
        channels=channels,
        folder=images,
    )
    rows = []
    for name, (_, field) in zip(names, fields.iterrows()):
        centres = find_cells(read_field(field), channel=marker)
        rows.append(
            pd.DataFrame({"Image Path": name, "Center_X": centres[:, 1], "Center_Y": centres[:, 0]})
        )
        if verbose:
            print(f"{name}: {len(centres)} cells found")
    return pd.concat(rows, ignore_index=True)

"""Images to cells: cell tables, fields of view, crops around cells and cell finding.

A cell table lists cells (one row each) with their field of view and centre, in one of
three layouts read into one normalised table:

- ``"token"``: image names carry a channel token (``r01c01f01p01-ch1sk1fk1fl1.tiff``),
  substituted per channel;
- ``"cellprofiler"``: per-object tables with ``Image_FileName_<channel>`` (optional
  ``Image_PathName_<channel>``) and ``<objects>_Location_Center_X`` / ``_Y`` columns, or
  an object table joined to its image table (``FileName_<channel>``, ``PathName_<channel>``,
  ``Location_Center_X`` / ``_Y``); paths written on Windows are read with ``/``;
- ``"stack"``: one multi-page file per field (TIFF, Opera ``.flex``), its pages the channels.
"""

import numbers
import os
import re
import warnings
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd

from .validation import (
    NotEnoughMemoryError,
    check_channels_first,
    check_fits_memory,
    check_positive_int,
    mixed_kind,
)

# "ch2" in "r01c01f01p01-ch2sk1fk1fl1.tiff", not in "batch2"
CHANNEL_TOKEN = re.compile(r"(?<![A-Za-z])ch\d+")
LAYOUTS = ("auto", "token", "cellprofiler", "stack")
# An image table's FileName_/PathName_, prefixed Image_ where joined by ExportToDatabase
CELLPROFILER_FILE = "FileName_"
CELLPROFILER_PATH = "PathName_"
CELLPROFILER_CENTER = re.compile(r"(?:^|_)Location_Center_([XY])$")
WINDOWS_PATH = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")  # C:\ or \\server
TOKEN_CHANNELS = ("ch1", "ch2")
FILE_PREFIX = "file"
OBJECT_NUMBER = "ObjectNumber"
# CellProfiler's (and pycytominer's) names of where a field is, kept from a cell table
FIELD_METADATA = {"plate": "Metadata_Plate", "well": "Metadata_Well", "site": "Metadata_Site"}
FIELD_NAMES = (FIELD_METADATA["plate"], FIELD_METADATA["well"])  # names, text in a CSV too
CHANNELS_CHOSEN = "channels_chosen"  # a table's attrs: whether its reader was given the order
TABLE_FILE = "table_file"  # a table's attrs: the file it was read from (jobs never write there)
CropResult = namedtuple("CropResult", ["crops", "index", "padded", "outside"])
BORDER_POLICIES = ("pad", "drop")


def _missing_columns(frame, columns):
    """Refuse a table that lacks any of ``columns``."""
    absent = [c for c in columns if c not in frame]
    if absent:
        raise ValueError(f"The cell table lacks columns {absent}; it has {list(frame.columns)}.")


def _file_names(frame, column):
    """The names in ``column`` as strings, refusing a missing column or rows without a name."""
    _missing_columns(frame, [column])
    names = frame[column]
    missing = names.isna() | (names.astype(str).str.strip() == "")
    if missing.any():
        raise ValueError(
            f"The cell table has no file name in column {column!r} for {int(missing.sum())} "
            f"row(s), the first at index {names.index[missing].tolist()[0]!r}. Expected a "
            "file name in every row; drop those cells first."
        )
    return names.astype(str)


def _cellprofiler_center(frame, axis):
    """The one ``*_Location_Center_<axis>`` column of a CellProfiler table."""
    found = [c for c in frame.columns if (m := CELLPROFILER_CENTER.search(c)) and m[1] == axis]
    if len(found) != 1:
        raise ValueError(
            f"Cannot tell the {axis} centre column among {found or 'no *_Location_Center_' + axis}"
            f" columns; pass {axis.lower()}_column=. The table has {list(frame.columns)}."
        )
    return found[0]


def channel_token(channel):
    """``channel`` as a token of file names, not inside a longer name or number.

    Examples
    --------
    >>> from sklearn_deeploc.fields import channel_token
    >>> [bool(channel_token("ch1").search(name)) for name in ("f01-ch1.tif", "f01-ch10.tif")]
    [True, False]
    >>> channel_token("1").sub("2", "r01c01f01-1.tif", count=1)  # not the 1 of r01
    'r01c01f01-2.tif'
    """
    return re.compile(_token_pattern(re.escape(channel), leading_digit=channel[:1].isdigit()))


def _token_pattern(body, leading_digit):
    """``body`` not inside a longer name or number ("f01ch1" has ch1; "r01" has no 1)."""
    inside = "A-Za-z0-9" if leading_digit else "A-Za-z"
    return rf"(?<![{inside}]){body}(?!\d)"


def _any_token(channels):
    """A regular expression matching the token of any of ``channels``."""
    return re.compile("|".join(channel_token(channel).pattern for channel in channels))


def token_family(channels):
    """Tokens of the kind of ``channels`` in file names: their letters then any number
    (``w1``, ``w2``: also an unchosen ``w3``; ``C01``: ``C04``), else (``DAPI``) only themselves.

    Examples
    --------
    >>> from sklearn_deeploc.fields import token_family
    >>> token_family(["C01", "C02"]).findall("Plate_C01_T0001F001L01A01Z01C03.tif")
    ['C01', 'C03']
    """
    forms = [re.fullmatch(r"([A-Za-z]*)\d+", channel) for channel in channels]
    letters = {form[1] for form in forms if form is not None}
    if None in forms or len(letters) != 1:
        return _any_token(channels)
    prefix = letters.pop()
    return re.compile(_token_pattern(re.escape(prefix) + r"\d+", leading_digit=not prefix))


def check_one_token(names, channels):
    """Refuse names holding more than one token of ``channels``, which could be swapped for
    the wrong one: CellVoyager's well ``C01`` beside its channel ``C01`` or ``C02``.

    Examples
    --------
    >>> from sklearn_deeploc.fields import check_one_token
    >>> check_one_token(["P_B03_Z01C01.tif"], ["C01", "C02"])
    >>> check_one_token(["P_C01_Z01C02.tif"], ["C01", "C02"])
    Traceback (most recent call last):
    ...
    ValueError: P_C01_Z01C02.tif holds the channel tokens ['C01', 'C02'] of channels ...
    """
    tokens = _any_token(channels)
    for name in names:
        found = tokens.findall(Path(name).name)
        if len(found) > 1:
            raise ValueError(
                f"{Path(name).name} holds the channel tokens {found} of channels "
                f"{list(channels)}: a well or other part is named like a channel, so the "
                "channel's files cannot be told by substituting the token. Name the channels "
                "by tokens only the channel part holds, or list each channel's file in a cell "
                "table (Image_FileName_<channel>)."
            )


def _token_files(frame, image_column, channels, folder):
    """Field names and ``file_<channel>`` columns of the token layout."""
    names = _file_names(frame, image_column)
    # A chN token, else the first channel's own (ImageXpress's w1 in A01_s1_w1.tif)
    has_chn = all(CHANNEL_TOKEN.search(Path(name).name) for name in names)
    token = CHANNEL_TOKEN if has_chn else channel_token(channels[0])
    no_token = [name for name in names if not token.search(Path(name).name)]
    if no_token:
        raise ValueError(
            f"Image names must carry a channel token 'chN' (or {channels[0]!r}) to substitute "
            f"{list(channels)} into; {no_token[0]!r} has none. Rename the files, or list "
            "every channel's file in a CellProfiler-style table (Image_FileName_<channel>)."
        )
    check_one_token(names.unique(), channels)
    paths = [folder / name for name in names]
    files = {}
    for channel in channels:
        renamed = [path.with_name(token.sub(channel, path.name, count=1)) for path in paths]
        files[f"{FILE_PREFIX}_{channel}"] = list(map(str, renamed))
    return names, files


def _cellprofiler_prefix(frame):
    """``"Image_"`` where the file name columns are ``Image_FileName_*``, else ``""``."""
    named = any(str(c).startswith("Image_" + CELLPROFILER_FILE) for c in frame.columns)
    return "Image_" if named else ""


def _windows_relative(names):
    """Names written on Windows (``..\\images\\a.tif``) with this machine's separators."""
    return names if os.name == "nt" else names.str.replace("\\", "/", regex=False)


def _cellprofiler_files(frame, channels, folder):
    """Field names and ``file_<channel>`` columns of the CellProfiler layout."""
    file, path = (_cellprofiler_prefix(frame) + p for p in (CELLPROFILER_FILE, CELLPROFILER_PATH))
    if channels is None:
        channels = [str(c).removeprefix(file) for c in frame if str(c).startswith(file)]
    if not channels:
        raise ValueError(
            f"The CellProfiler layout needs Image_{CELLPROFILER_FILE}<channel> columns (or "
            f"{CELLPROFILER_FILE}<channel>); the table has none (columns: "
            f"{list(frame.columns)[:8]})."
        )
    _missing_columns(frame, [file + channel for channel in channels])
    names = {}
    for channel in channels:
        names[channel] = _windows_relative(_file_names(frame, file + channel))
        if path + channel in frame:
            folders = _file_names(frame, path + channel)
            windows = folders[folders.str.contains(WINDOWS_PATH)]
            if os.name != "nt" and len(windows):
                raise ValueError(
                    f"Column {path + channel} holds Windows paths ({windows.iloc[0]!r}), which "
                    f"this machine cannot open; drop the {path}* columns and pass folder= (the "
                    "CLI's --images) the images' folder here."
                )
            names[channel] = _windows_relative(folders) + "/" + names[channel]
    files = {f"{FILE_PREFIX}_{c}": [str(folder / n) for n in names[c]] for c in channels}
    return names[channels[0]], files


def read_cell_table(
    table,
    *,
    layout="auto",
    channels=None,
    folder=None,
    image_column="Image Path",
    x_column=None,
    y_column=None,
    label_column=None,
):
    """Read a table of cells into one row per cell: its field's files and its centre.

    Parameters
    ----------
    table : str, path-like or DataFrame
        A ``.csv`` or ``.parquet`` file, or the table itself.
    layout : {"auto", "token", "cellprofiler", "stack"}, default="auto"
        See the module docstring. ``"auto"``: ``"cellprofiler"`` with ``Image_FileName_*``
        columns (``FileName_*`` in an object table joined to its image table), else
        ``"token"`` when image names carry a ``chN`` token or ``channels`` is given, else
        ``"stack"``.
    channels : str or list of str, optional
        The channels in the model's order: the tokens substituted for ``chN`` (default
        ``["ch1", "ch2"]``), or the names after ``Image_FileName_`` (default: every such
        column). The stack layout takes every page.
    folder : str or path-like, optional
        Where relative file names start; default the table file's folder (a DataFrame: the
        working directory).
    image_column : str, default="Image Path"
        Column of image names (token and stack layouts).
    x_column, y_column : str, optional
        Columns of the cell centres (x the image column, y the row); default ``Center_X`` /
        ``Center_Y``, or the one ``*_Location_Center_X`` / ``_Y``.
    label_column : str, optional
        Column of cell labels, kept as ``label``.

    Returns
    -------
    DataFrame
        Indexed like the input: ``field`` (its name in the table), ``file_<channel>`` per
        channel (``file`` for the stack layout), ``x``, ``y``, ``label`` with ``label_column``,
        and the table's ``ObjectNumber``, and ``Metadata_Plate``, ``_Well`` and ``_Site`` (or
        ``Image_Metadata_``...) as ``plate``, ``well`` and ``site``, where it has them; its
        other ``Metadata_`` columns (a gene, a treatment) as they are.

    See Also
    --------
    crop_fields : crops of every cell in the table.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_deeploc.fields import read_cell_table
    >>> cells = pd.DataFrame({"Image_FileName_GFP": ["a-GFP.tif"],
    ...                       "Image_FileName_RFP": ["a-RFP.tif"],
    ...                       "cells_Location_Center_X": [30.5],
    ...                       "cells_Location_Center_Y": [12.0]})
    >>> read_cell_table(cells, folder="images")
           field          file_GFP          file_RFP     x     y
    0  a-GFP.tif  images/a-GFP.tif  images/a-RFP.tif  30.5  12.0
    >>> tokens = pd.DataFrame({"Image Path": ["r01c01f01-ch1.tiff"],
    ...                        "Center_X": [5], "Center_Y": [7]})
    >>> list(read_cell_table(tokens, channels=["ch2", "ch1"]).columns)
    ['field', 'file_ch2', 'file_ch1', 'x', 'y']
    """
    from .blocks import read_table

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}.")
    if isinstance(table, pd.DataFrame):
        frame, default_folder = table, Path()
    else:
        try:
            frame = read_table(
                table,
                text=lambda c: str(c).removeprefix("Image_") in FIELD_NAMES,  # plate "2024"
                as_written=lambda c: _is_metadata(c) or c == label_column,
            )
            default_folder = Path(table).parent
        except pd.errors.EmptyDataError:
            raise ValueError(
                f"The cell table {table} is empty; expected a header row and one row per cell."
            ) from None
        except UnicodeDecodeError as error:
            raise ValueError(
                f"The cell table {table} is not UTF-8 text ({error.reason} at byte "
                f"{error.start}); save it as UTF-8."
            ) from None
    folder = default_folder if folder is None else Path(folder)
    if isinstance(channels, str):
        channels = [channels]
    if channels is not None and len(channels) == 0:
        raise ValueError("channels must name at least one channel; got an empty list.")
    if channels is not None and not all(isinstance(c, str) for c in channels):
        raise ValueError(f"channels must be names (text); got {list(channels)}.")
    if channels is not None and len(set(channels)) != len(channels):
        raise ValueError(f"channels names a channel twice: {list(channels)}.")
    file_column = _cellprofiler_prefix(frame) + CELLPROFILER_FILE
    if layout == "auto" and any(str(c).startswith(file_column) for c in frame.columns):
        layout = "cellprofiler"
    elif layout == "auto" and "ImageNumber" in frame and image_column not in frame:
        raise ValueError(
            f"The cell table has ImageNumber but no {CELLPROFILER_FILE}<channel> columns: a "
            "CellProfiler object table; join it to its image table on ImageNumber first "
            "(cells.merge(images, on='ImageNumber'))."
        )
    elif layout == "auto":
        names = _file_names(frame, image_column).map(lambda name: Path(name).name)
        layout = "token" if channels or names.str.contains(CHANNEL_TOKEN).any() else "stack"
    if layout == "cellprofiler":
        x_column = x_column or _cellprofiler_center(frame, "X")
        y_column = y_column or _cellprofiler_center(frame, "Y")
        fields, files = _cellprofiler_files(frame, channels, folder)
    elif layout == "token":
        fields, files = _token_files(frame, image_column, channels or TOKEN_CHANNELS, folder)
    elif channels is not None:
        raise ValueError(
            "The stack layout reads every page of a field's file as a channel; "
            f"channels={channels} does not apply (image names have no 'chN' token)."
        )
    else:
        fields = _file_names(frame, image_column)
        files = {FILE_PREFIX: [str(folder / name) for name in fields]}
    x_column, y_column = x_column or "Center_X", y_column or "Center_Y"
    _missing_columns(frame, [x_column, y_column] + ([label_column] if label_column else []))
    cells = pd.DataFrame({"field": fields, **files}, index=frame.index)
    cells["x"], cells["y"] = (_coordinates(frame, column) for column in (x_column, y_column))
    if label_column:
        cells["label"] = frame[label_column].to_numpy()
    if OBJECT_NUMBER in frame:  # CellProfiler's: profiles join back to its measurements
        cells[OBJECT_NUMBER] = _object_numbers(frame[OBJECT_NUMBER])
    for name, column in FIELD_METADATA.items():
        found = [c for c in (column, f"Image_{column}") if c in frame]  # ExportToDatabase's
        if found:
            cells[name] = frame[found[0]].to_numpy()
    cells = cells.assign(**_other_metadata(frame))
    cells.attrs[CHANNELS_CHOSEN] = channels is not None
    cells.attrs[TABLE_FILE] = None if isinstance(table, pd.DataFrame) else os.path.abspath(table)
    return cells


def _is_metadata(column):
    """Whether a table's column is CellProfiler metadata (``Image_Metadata_`` joined)."""
    return str(column).removeprefix("Image_").startswith("Metadata_")


def _other_metadata(frame):
    """The table's other ``Metadata_`` (or ``Image_Metadata_``) columns by their ``Metadata_``
    names: a gene or treatment the profiles keep; one mixing value types is left, warned."""
    kept = {}
    for column in frame.columns:
        name = str(column).removeprefix("Image_")
        if not _is_metadata(column) or name in kept or name in FIELD_METADATA.values():
            continue
        if kind := mixed_kind(frame[column]):
            warnings.warn(
                f"The cell table's {column} mixes value types ({kind}), which table files "
                "cannot hold; it is left out.",
                UserWarning,
                stacklevel=3,
            )
            continue
        kept[name] = frame[column]  # its type kept: nullable integers, booleans, categories
    return kept


def _object_numbers(column):
    """An ``ObjectNumber`` column as int64, naming the first row that is not a whole number."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(values) & (values >= 0) & (values == np.round(values)))
    if bad.any():
        first = int(bad.argmax())
        raise ValueError(
            f"Column 'ObjectNumber' must hold whole numbers from 0 (object numbers); row "
            f"{first} holds {column.iloc[[first]].tolist()[0]!r}."
        )
    return values.astype(np.int64)


def drop_repeated_cells(cells, source="The cell table"):
    """The cell table without rows that repeat an earlier one, with a warning naming them.

    A repeated row (same field, centre and label) is one cell listed twice: it would weigh
    double and could land on both sides of a train/validation split.

    Parameters
    ----------
    cells : DataFrame
        A table from :func:`read_cell_table`.
    source : str, default="The cell table"
        What the table is, for the warning (for example its file name).

    Returns
    -------
    DataFrame
        The first row of each cell, in table order; the index is kept.

    Examples
    --------
    >>> import warnings, pandas as pd
    >>> from sklearn_deeploc.fields import drop_repeated_cells
    >>> cells = pd.DataFrame({"field": ["a.tif"] * 3, "x": [5.0, 9.0, 5.0], "y": [7.0] * 3})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     kept = drop_repeated_cells(cells)
    >>> kept.index.tolist()
    [0, 1]
    >>> print(caught[0].message)
    The cell table has 1 row(s) repeating ... row 2 repeats row 0; each cell is kept once.
    """
    rows = pd.util.hash_pandas_object(cells, index=False)
    repeated = rows.duplicated()
    if repeated.any():
        example = rows.index[repeated.to_numpy()][0]
        first = rows.index[(rows == rows[example]).to_numpy()][0]
        warnings.warn(
            f"{source} has {int(repeated.sum())} row(s) repeating an earlier row (same field, "
            f"centre and label), for example row {example} repeats row {first}; each cell "
            "is kept once.",
            UserWarning,
            stacklevel=2,
        )
    return cells[~repeated.to_numpy()]


def file_columns(cells):
    """The columns of a normalised cell table that name a field's channel files, in order.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_deeploc.fields import file_columns
    >>> file_columns(pd.DataFrame(columns=["field", "file_GFP", "file_RFP", "x", "y"]))
    ['file_GFP', 'file_RFP']
    """
    return [c for c in cells.columns if _is_file_column(c)]


def _coordinates(frame, column):
    """A centre column as floats, naming the first row that is not a number."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        first = bad.to_numpy().argmax()
        raise ValueError(
            f"Column {column!r} must hold pixel coordinates; row {first} holds "
            f"{frame[column].iloc[first]!r}."
        )
    return values.to_numpy(dtype=float)


def _is_file_column(name):
    """Whether ``name`` is a ``file`` or ``file_<channel>`` column."""
    return name == FILE_PREFIX or name.startswith(FILE_PREFIX + "_")


def _channels_first(image, axes):
    """An image series as (C, H, W): its pages, or RGB samples (last), are channels."""
    if axes.endswith("S"):
        image = np.moveaxis(image, -1, 0)
    return image.reshape(-1, *image.shape[-2:])


class _LayoutError(ValueError):
    """A readable image file that is not one field of channels (its message is complete)."""


def _check_layout(path, tiff):
    """Refuse, before decoding, a TIFF of several OME images or of z planes or time points."""
    if tiff.is_ome and len(tiff.series) > 1:
        names = [series.name for series in tiff.series][:4]
        raise _LayoutError(
            f"{path} holds {len(tiff.series)} OME images ({names}: stage positions, fields, "
            "or channels saved apart), not one image of channels; expected one field per "
            "file: save each position apart, and a field's channels as one image (axes CYX)."
        )
    for series in tiff.series:  # pages are channels, unless the file says they are not
        planes = {a: n for a, n in zip(series.axes, series.shape) if a in "ZT" and n > 1}
        if planes:
            raise _LayoutError(
                f"{path} holds a z stack or time series ({planes}, axes {series.axes!r}), not "
                "channels; expected one page per channel: project or pick a plane, or, where "
                "the pages are channels (a Fiji stack), save it as a hyperstack of channels "
                "(Image > Hyperstacks > Stack to Hyperstack)."
            )


def _read_series(path):
    """Every image series of a file, with its tifffile axes (``YXS`` for RGB samples)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:  # pages appended one write at a time: a series each
            _check_layout(path, tiff)
            shapes = ", ".join(f"{s.shape} {s.dtype}" for s in tiff.series)
            check_fits_memory(  # before decoding: a damaged header can claim any size
                1,
                sum(s.nbytes for s in tiff.series),
                what=f"Image file {path}, whose header claims {shapes} pixels,",
                expected="an image that fits in memory (damaged headers claim sizes like this too)",
            )
            return [(series.asarray(), series.axes) for series in tiff.series]
    except tifffile.TiffFileError:  # not a TIFF
        from skimage.io import imread

        image = imread(path)
        return [(image, "YXS" if image.ndim == 3 else "YX")]


def header_size(path):
    """(height, width) of a TIFF or ``.npy`` image from its header alone, else None (another
    format, a damaged header or series of several sizes: the full read says what is wrong).

    Examples
    --------
    >>> import tempfile, numpy as np, tifffile
    >>> from pathlib import Path
    >>> from sklearn_deeploc.fields import header_size
    >>> path = Path(tempfile.mkdtemp()) / "field.tif"
    >>> tifffile.imwrite(path, np.zeros((2, 30, 40), np.uint16))
    >>> header_size(path)
    (30, 40)
    """
    import tifffile

    try:
        if Path(path).suffix.lower() == ".npy":
            shape = [n for n in np.load(path, mmap_mode="r", allow_pickle=False).shape if n != 1]
            return tuple(shape) if len(shape) == 2 else None
        with tifffile.TiffFile(path) as tiff:
            sizes = {s.shape[-3:-1] if s.axes.endswith("S") else s.shape[-2:] for s in tiff.series}
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError):
        return None
    return sizes.pop() if len(sizes) == 1 else None


def _read_image(path):
    """One image file as (C, H, W): TIFF pages and series, Opera .flex planes or RGB samples."""
    from PIL.Image import DecompressionBombError  # a PNG or JPEG header claiming a huge size

    try:
        series = _read_series(path)
    except (NotEnoughMemoryError, _LayoutError):  # their messages are complete
        raise
    except MemoryError as error:
        raise ValueError(
            f"Not enough memory to read image file {path} ({error}); expected an image that "
            "fits in memory."
        ) from None  # the traceback would keep the partial arrays alive
    # No reader names the file; PIL raises SyntaxError for a broken PNG.
    except (ValueError, OSError, SyntaxError, DecompressionBombError) as error:
        raise ValueError(
            f"Cannot read image file {path}: {error}. Expected a complete TIFF, Opera .flex "
            "or other image file."
        ) from error
    if not series:
        raise ValueError(f"Cannot read image file {path}: it holds no image.")
    stacks = [_channels_first(image, axes) for image, axes in series]
    shapes = [stack.shape for stack in stacks]
    if len({shape[1:] for shape in shapes}) > 1:
        raise ValueError(
            f"{path} holds {len(stacks)} series of different sizes {shapes}; expected "
            "series of one size, read as channels."
        )
    return stacks[0] if len(stacks) == 1 else np.concatenate(stacks)


def check_image_files(paths, limit=10):
    """Raise one ``FileNotFoundError`` naming the missing files of ``paths`` (at most ``limit``).

    Examples
    --------
    >>> from sklearn_deeploc.fields import check_image_files
    >>> check_image_files(["no-such-field-ch1.tiff", "no-such-field-ch2.tiff"], limit=1)
    Traceback (most recent call last):
    ...
    FileNotFoundError: 2 image files not found: ['no-such-field-ch1.tiff'] and 1 more.
    """
    missing = sorted({str(p) for p in paths if not Path(p).is_file()})
    if missing:
        more = f" and {len(missing) - limit} more" if len(missing) > limit else ""
        raise FileNotFoundError(f"{len(missing)} image files not found: {missing[:limit]}{more}.")


def read_field(files):
    """Read one field of view as a (C, H, W) array; missing files raise one ``FileNotFoundError``.

    Parameters
    ----------
    files : str, path-like, sequence of them, or a row of a cell table
        The field's channel files, or a row of :func:`read_cell_table` (its
        ``file_*`` entries). A single file gives a channel per page (TIFF,
        Opera ``.flex``) or per RGB colour; of several files, each holds one.

    Returns
    -------
    ndarray of shape (C, H, W)
        The channels of all files, stacked in order, in the files' dtype.

    Examples
    --------
    >>> import tempfile, numpy as np, tifffile
    >>> from sklearn_deeploc.fields import read_field
    >>> path = tempfile.mkdtemp() + "/field.tiff"
    >>> tifffile.imwrite(path, np.zeros((3, 40, 50), np.uint16), photometric="minisblack")
    >>> read_field(path).shape
    (3, 40, 50)
    >>> gfp = tempfile.mkdtemp() + "/gfp.tiff"
    >>> tifffile.imwrite(gfp, np.zeros((40, 50), np.uint16))
    >>> read_field([gfp, gfp]).shape
    (2, 40, 50)
    """
    if isinstance(files, pd.Series):
        row = files
        files = [path for column, path in row.items() if _is_file_column(column)]
        if not files:
            raise ValueError(f"The row has no file_<channel> entries; it has {list(row.index)}.")
    elif isinstance(files, (str, Path)):
        files = [files]
    if not len(files):
        raise ValueError("Expected at least one image file; got none.")
    check_image_files(files)
    if len(files) > 1:  # from the headers first: a small file can claim GBs
        _check_one_size({str(path): header_size(path) for path in files})
    images = [_read_image(path) for path in files]
    several = {str(path): len(image) for path, image in zip(files, images) if len(image) != 1}
    if len(files) > 1 and several:
        raise ValueError(
            f"Each channel file must hold one channel; these hold more {several} (RGB "
            "samples or pages). Save one channel per file, or read a multi-channel image "
            "alone (the stack layout)."
        )
    _check_one_size({str(path): image.shape[1:] for path, image in zip(files, images)})
    return np.concatenate(images)


def _check_one_size(sizes):
    """Refuse channel images of several (height, width) ``sizes`` (None: not known)."""
    if len({size for size in sizes.values() if size is not None}) > 1:
        raise ValueError(f"The channel images of a field must have one size; got {sizes}.")


def _check_float32_range(image):
    """Refuse finite pixels that float32, which crops and cell finding compute in, cannot hold."""
    if image.dtype.kind != "f" or image.dtype.itemsize <= 4:
        return
    limit = np.finfo(np.float32).max
    with np.errstate(invalid="ignore"):  # NaN pixels compare False: they are not too large
        beyond = np.isfinite(image) & (np.abs(image) > limit)
    if beyond.any():
        position = np.unravel_index(np.argmax(beyond), image.shape)
        axes = ("channel", "row", "column")[-image.ndim :]  # (C, H, W) or (H, W)
        where = ", ".join(f"{axis} {int(i)}" for axis, i in zip(axes, position))
        raise ValueError(
            f"image has {int(beyond.sum())} pixel(s) beyond the range of float32 (+-{limit:.3g}), "
            f"which crops and cell finding compute in; the first is {image[position]:.3g} at "
            f"{where}. Expected values float32 holds (rescale the field first)."
        )


def _centers_array(centers, x_column, y_column):
    """Cell centres as a finite (n, 2) float array of (row, col)."""
    if hasattr(centers, "columns"):
        if x_column is None or y_column is None:
            raise ValueError(
                "Centres given as a DataFrame need x_column= and y_column= (for example "
                f"'Center_X', 'Center_Y'); columns are {list(centers.columns)}."
            )
        absent = [column for column in (x_column, y_column) if column not in centers.columns]
        if absent:
            raise ValueError(
                f"The centres have no column {', '.join(map(repr, absent))}; expected "
                f"x_column and y_column among {list(centers.columns)}."
            )
        centers = centers[[y_column, x_column]]
    centers = np.asarray(centers, dtype=float)
    if centers.shape == (0,):  # an empty list: no cells, like np.zeros((0, 2))
        centers = centers.reshape(0, 2)
    if centers.ndim != 2 or centers.shape[1] != 2:
        raise ValueError(f"centers must have shape (n, 2) as (row, col); got {centers.shape}.")
    missing = ~np.isfinite(centers).all(axis=1)
    if missing.any():
        first = int(np.argmax(missing))
        raise ValueError(
            f"centers must be finite; {int(missing.sum())} centre(s) are NaN or infinite, "
            f"the first is centre {first} at {centers[first].tolist()}. Drop the cells "
            "without a position first."
        )
    return centers


def crop_cells(image, centers, size=64, *, border="pad", x_column=None, y_column=None):
    """Square crops centred on cells of a multi-channel field of view.

    Parameters
    ----------
    image : ndarray of shape (C, H, W)
        The field, any numeric dtype.
    centers : array-like of shape (n, 2) or DataFrame
        Cell centres as (row, col); or a DataFrame with the columns named by ``x_column``
        (column coordinate) and ``y_column`` (row coordinate).
    size : int, default=64
        Side of the crops.
    border : {"pad", "drop"}, default="pad"
        Cells whose box crosses the field's edge are padded with each channel's median (zeros
        would add a false edge for a camera with an offset), or dropped. A centre outside the
        field is skipped either way, with a warning.
    x_column, y_column : str, optional
        DataFrame column names of the centres.

    Returns
    -------
    CropResult
        ``crops`` (k, C, size, size) float32; ``index``, the positions in ``centers`` of the
        k crops; ``padded``, a bool per crop; ``outside``, the positions of centres outside
        the field (not cropped).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.screen import crop_cells
    >>> field = np.random.default_rng(0).random((2, 100, 100))
    >>> result = crop_cells(field, [[50, 50], [5, 5]], size=64, border="drop")
    >>> result.crops.shape, result.index.tolist()
    ((1, 2, 64, 64), [0])
    """
    if border not in BORDER_POLICIES:
        raise ValueError(f"border must be one of {BORDER_POLICIES}; got {border!r}.")
    size = check_positive_int(size, "size")
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must have shape (C, H, W); got {image.shape}.")
    if image.size == 0:
        raise ValueError(
            f"image must have at least one channel and one pixel; got shape {image.shape}."
        )
    check_channels_first(image.shape, what="image")
    _check_float32_range(image)
    # Halves round up, not to even: a centroid at 100.5 is the middle of its crop, as 101.5 is
    centers_given, centers = centers, np.floor(_centers_array(centers, x_column, y_column) + 0.5)
    channels, height, width = image.shape
    in_field = ((centers >= 0) & (centers < [height, width])).all(axis=1)
    outside = np.flatnonzero(~in_field)
    if len(outside):
        # A table's cells by its row labels (a field's rows keep the whole table's)
        table = hasattr(centers_given, "columns")
        named = centers_given.index[outside] if table else outside
        shown = ", ".join(map(str, named[:10])) + (", ..." if len(outside) > 10 else "")
        warnings.warn(
            f"{len(outside)} of {len(centers)} centre(s) lie outside the {height}x{width} field "
            f"and were not cropped ({'rows' if table else 'positions'} {shown}; see "
            "CropResult.outside).",
            UserWarning,
            stacklevel=2,
        )
    candidates = np.flatnonzero(in_field)
    tops, lefts = (centers[candidates].astype(np.int64) - size // 2).T
    box_inside = (tops >= 0) & (lefts >= 0) & (tops + size <= height) & (lefts + size <= width)
    keep = np.ones_like(box_inside) if border == "pad" else box_inside
    check_fits_memory(
        int(keep.sum()),
        channels * size * size * 4,
        what=f"{int(keep.sum())} crop(s) of {channels}x{size}x{size} float32",
        expected=f"a smaller size (the field is {height}x{width})",
    )
    crops = _gather_crops(image, tops[keep], lefts[keep], size)
    return CropResult(crops, candidates[keep], ~box_inside[keep], outside)


def _channel_medians(image):
    """Each channel's median as float32; of 8- or 16-bit channels, from a histogram (no sort)."""
    if image.dtype.kind != "u" or image.dtype.itemsize > 2:
        return np.median(image.reshape(len(image), -1), axis=1).astype(np.float32)
    middle = [(image[0].size - 1) // 2, image[0].size // 2]
    cumulative = [np.cumsum(np.bincount(channel.ravel())) for channel in image]
    return np.array(
        [np.searchsorted(c, middle, side="right").mean() for c in cumulative], np.float32
    )


def _gather_crops(image, tops, lefts, size):
    """Crops at ``tops``, ``lefts``, each padded on its own (a padded field would cost memory)."""
    channels, height, width = image.shape
    window = np.arange(size)
    rows, cols = tops[:, None] + window, lefts[:, None] + window
    crops = image[
        np.arange(channels)[None, :, None, None],
        np.clip(rows, 0, height - 1)[:, None, :, None],
        np.clip(cols, 0, width - 1)[:, None, None, :],
    ].astype(np.float32, copy=False)
    rows_out, cols_out = (rows < 0) | (rows >= height), (cols < 0) | (cols >= width)
    if rows_out.any() or cols_out.any():
        background = _channel_medians(image)[None, :, None, None]
        # Two broadcast masks: no (k, C, size, size) temporary.
        np.copyto(crops, background, where=rows_out[:, None, :, None])
        np.copyto(crops, background, where=cols_out[:, None, None, :])
    return crops


def find_cells(image, *, channel=1, sigma=2.0, min_distance=7, min_area=30):
    """Cell centres from a marker channel by seeded watershed (scikit-image).

    The smoothed marker is split into cells and background by Otsu's threshold; touching
    cells are separated by a watershed of the distance transform seeded at its maxima.

    Parameters
    ----------
    image : ndarray of shape (C, H, W) or (H, W)
        Channels first; an image that looks like (H, W, C) is refused.
    channel : int or None, default=1
        Channel of the whole-cell (e.g. cytosolic) marker; None for an (H, W) image.
    sigma : float, default=2.0
        Gaussian smoothing before thresholding, in pixels.
    min_distance : int, default=7
        Smallest distance between two seeds (about a cell radius).
    min_area : int, default=30
        Regions smaller than this (pixels) are dropped as debris.

    Returns
    -------
    ndarray of shape (n, 2)
        Centres as (row, col), float.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.screen import find_cells
    >>> yy, xx = np.mgrid[:80, :80]
    >>> field = ((yy - 20) ** 2 + (xx - 25) ** 2 < 100) + ((yy - 55) ** 2 + (xx - 50) ** 2 < 100)
    >>> np.round(find_cells(field.astype(float), channel=None)).tolist()
    [[20.0, 25.0], [55.0, 50.0]]
    """
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.measure import regionprops
    from skimage.segmentation import watershed

    if not isinstance(sigma, numbers.Real) or not 0 <= sigma < np.inf:
        raise ValueError(f"sigma must be a finite number >= 0 (pixels); got {sigma!r}.")
    min_distance = check_positive_int(min_distance, "min_distance")
    if not isinstance(min_area, numbers.Real) or not 0 <= min_area < np.inf:
        raise ValueError(f"min_area must be a finite number >= 0 (pixels); got {min_area!r}.")
    image = np.asarray(image)
    marker = _marker_channel(image, channel)
    _check_float32_range(image)
    smooth = ndimage.gaussian_filter(marker.astype(np.float32, copy=False), sigma)
    foreground = smooth > threshold_otsu(smooth)
    distance = ndimage.distance_transform_edt(foreground)
    peaks = peak_local_max(
        distance,
        min_distance=min_distance,
        labels=ndimage.label(foreground)[0],
        exclude_border=False,
    )
    seeds = np.zeros(marker.shape, np.int32)
    seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    regions = watershed(-distance, seeds, mask=foreground)
    centres = [r.centroid for r in regionprops(regions) if r.area >= min_area]
    return np.asarray(centres, dtype=float).reshape(-1, 2)


def _marker_channel(image, channel):
    """The (H, W) marker channel of ``image``, checked to be finite and non-empty."""
    if channel is None:
        if image.ndim != 2:
            raise ValueError(f"With channel=None, expected an (H, W) image; got {image.shape}.")
        marker = image
    else:
        if not isinstance(channel, numbers.Integral) or isinstance(channel, bool):
            raise ValueError(f"channel must be an integer index or None; got {channel!r}.")
        if image.ndim != 3:
            raise ValueError(f"Expected a (C, H, W) image with channel=; got {image.shape}.")
        check_channels_first(image.shape, what="image")
        if not -len(image) <= channel < len(image):
            raise ValueError(f"channel={channel}, but the image has {len(image)} channel(s).")
        marker = image[channel]
    if marker.size == 0:
        raise ValueError(f"The image has no pixels (shape {image.shape}); expected a field.")
    if not np.isfinite(marker).all():
        raise ValueError("The marker channel has NaN or infinite pixels; expected finite ones.")
    return marker


def iter_field_crops(cells, *, size=64, border="pad", verbose=0):
    """Crops of the cells of each field in turn, reading one field at a time.

    Parameters
    ----------
    cells : DataFrame
        A table from :func:`read_cell_table`.
    size : int, default=64
        Side of the crops.
    border : {"pad", "drop"}, default="pad"
        Pad or drop cells whose box crosses the field's edge (see :func:`crop_cells`).
    verbose : int, default=0
        Show a progress bar over fields when > 0.

    Yields
    ------
    crops : ndarray of shape (k, C, size, size), float32
    kept : DataFrame
        The k rows of ``cells`` cropped, in order, with a ``padded`` column.

    Examples
    --------
    >>> import tempfile, numpy as np, pandas as pd, tifffile
    >>> from sklearn_deeploc.fields import iter_field_crops, read_cell_table
    >>> folder = tempfile.mkdtemp()
    >>> tifffile.imwrite(folder + "/a.tiff", np.zeros((2, 100, 100), np.uint16),
    ...                  photometric="minisblack")
    >>> table = pd.DataFrame({"Image Path": ["a.tiff"] * 2, "Center_X": [50, 2],
    ...                       "Center_Y": [50, 50]})
    >>> cells = read_cell_table(table, folder=folder)
    >>> [(crops.shape, kept["padded"].tolist()) for crops, kept in iter_field_crops(cells)]
    [((2, 2, 64, 64), [False, True])]
    """
    from tqdm.auto import tqdm

    columns = file_columns(cells)
    if not columns:
        raise ValueError(
            "cells must be a table from read_cell_table, with file_<channel> columns; "
            f"got columns {list(cells.columns)}."
        )
    _missing_columns(cells, ["x", "y"])
    check_image_files(cells[columns].to_numpy().ravel())
    fields = cells.groupby(columns, sort=False)
    n_channels = None
    for _, field in tqdm(fields, total=fields.ngroups, unit="field", disable=not verbose):
        image = read_field(field.iloc[0])
        if n_channels not in (None, len(image)):
            raise ValueError(
                f"Field {field['field'].iloc[0]!r} has {len(image)} channels; the fields "
                f"before it have {n_channels}."
            )
        n_channels = len(image)
        try:
            result = crop_cells(image, field, size, border=border, x_column="x", y_column="y")
        except ValueError as error:  # crop_cells sees an array: name the field's files
            files = field[columns].iloc[0].tolist()
            raise ValueError(f"Field {field['field'].iloc[0]!r} {files}: {error}") from error
        yield result.crops, field.iloc[result.index].assign(padded=result.padded)


def crop_fields(cells, *, size=64, border="pad", verbose=0):
    """Crops of every cell of a cell table, one field of view read at a time.

    Parameters
    ----------
    cells : DataFrame
        A table from :func:`read_cell_table`.
    size : int, default=64
    border : {"pad", "drop"}, default="pad"
    verbose : int, default=0
        See :func:`iter_field_crops`.

    Returns
    -------
    crops : ndarray of shape (n, C, size, size), float32
    kept : DataFrame
        The n rows of ``cells`` cropped (grouped by field), with a ``padded`` column;
        ``kept.index`` refers to the input table's rows.

    See Also
    --------
    iter_field_crops : the same, field by field, for screens larger than memory.

    Examples
    --------
    >>> import tempfile, numpy as np, pandas as pd, tifffile
    >>> from sklearn_deeploc.fields import crop_fields, read_cell_table
    >>> folder = tempfile.mkdtemp()
    >>> for channel in ("ch1", "ch2"):
    ...     tifffile.imwrite(f"{folder}/r01c01-{channel}.tiff", np.ones((100, 100), np.uint16))
    >>> table = pd.DataFrame({"Image Path": ["r01c01-ch1.tiff"] * 2,
    ...                       "Center_X": [50, 2], "Center_Y": [50, 50], "Label": ["ER", "ER"]})
    >>> cells = read_cell_table(table, folder=folder, label_column="Label")
    >>> crops, kept = crop_fields(cells, border="drop")
    >>> crops.shape, kept["label"].tolist()
    ((1, 2, 64, 64), ['ER'])
    """
    parts = list(iter_field_crops(cells, size=size, border=border, verbose=verbose))
    if not parts:
        raise ValueError("The cell table has no cells.")
    crops, kept = zip(*parts)
    return np.concatenate(crops), pd.concat(kept)

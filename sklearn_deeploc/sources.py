"""Where a screen's fields and cells come from: a cell table, a folder, an OME-Zarr plate.

A source lists its fields (``key``, ``plate``, ``well``, ``site``) and reads one at a time:
its (C, H, W) image in the model's channel order and its cells, one row each with
``ObjectNumber``, ``center_x``, ``center_y`` (``area`` from a label image, ``label`` from a
table's label column). Cells come from the table, a label image (numbered by its labels) or,
without either, :func:`~sklearn_deeploc.fields.find_cells`.
"""

import os
import re
import warnings
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ._files import sha256_hex, stat_digest, tree_files
from .fields import (
    CHANNELS_CHOSEN,
    FILE_PREFIX,
    OBJECT_NUMBER,
    TOKEN_CHANNELS,
    channel_token,
    check_image_files,
    check_one_token,
    file_columns,
    find_cells,
    header_size,
    read_cell_table,
    read_field,
    token_family,
)
from .labels import cells_from_labels, read_label_image
from .profiles import OWN_METADATA
from .validation import mixed_kind

WELL_PATTERN = r"r\d+c\d+"
# Never masks: what Cellpose saves beside its _cp_masks (its session file; flows, outlines,
# plots) and MetaXpress's thumbnails beside its images
CELLPOSE_SESSION = "_seg.npy"
NOT_MASKS = ("_flows", "_dP", "_cellprob", "_outlines", "_cp_outlines", "_cp_output", "_thumb")
# The z plane and time point in file names, and what the time is called: Harmony's (Operetta,
# Opera Phenix) r01c01f01p02-ch1sk1, CellVoyager's T0001F001L01A01Z02C01
PLANE_NAMES = (
    (re.compile(r"r\d+c\d+f\d+p(?P<plane>\d+)-ch\d+sk(?P<time>\d+)"), "sk"),
    (re.compile(r"T(?P<time>\d+)F\d+L\d+A\d+Z(?P<plane>\d+)C\d+"), "T"),
)
# Harmony exports a plate as <measurement>/Images/, its index (plate name) beside the images
HARMONY_INDEXES = ("Index.idx.xml", "Index.xml")
LABEL_SUFFIXES = (".tif", ".tiff", ".png", ".npy")
FIELD_SUFFIXES = (".tif", ".tiff", ".flex", ".png", ".jpg", ".jpeg", ".bmp")


def _numbered_cells(x, y, numbers=None):
    """Cells at centres ``x``, ``y``, numbered ``numbers`` (default from 1)."""
    numbers = np.arange(1, len(x) + 1) if numbers is None else numbers
    return pd.DataFrame({OBJECT_NUMBER: numbers, "center_x": x, "center_y": y})


def _cells_found(image, marker):
    """The cells :func:`find_cells` finds in channel ``marker``."""
    centres = find_cells(image, channel=marker)
    return _numbered_cells(centres[:, 1], centres[:, 0])


def _named_fields(keys, plates, pattern, wells=None):
    """Fields named by files: the well ``pattern`` finds (else the stem; without a pattern, the
    stem unasked) unless ``wells`` are given, sites numbered in it."""
    if wells is None:
        wells = (
            [Path(key).stem for key in keys] if pattern is None else _pattern_wells(keys, pattern)
        )
    fields = pd.DataFrame({"key": keys, "plate": plates, "well": wells})
    fields["site"] = fields.groupby(["plate", "well"], sort=False).cumcount()
    return fields


def _pattern_wells(keys, pattern):
    """The well ``pattern`` (or its group named ``well``) finds in each key's file name (as
    :func:`_well_name`), else its stem (with a warning)."""
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise ValueError(
            f"well_pattern {pattern!r} is not a regular expression: {error}."
        ) from None
    matches = [regex.search(Path(key).name) for key in keys]
    unmatched = [Path(key).name for key, match in zip(keys, matches) if not match]
    if unmatched:
        warnings.warn(
            f"well_pattern {pattern!r} finds no well in {len(unmatched)} of {len(keys)} "
            f"image names (for example {unmatched[0]!r}); each of those fields is a well of "
            "its own, named by its file's stem. Pass a well_pattern matching the well in "
            "these names.",
            UserWarning,
            stacklevel=5,
        )
    return [
        _well_name(match["well"] if "well" in regex.groupindex and match["well"] else match[0])
        if match
        else Path(key).stem
        for key, match in zip(keys, matches)
    ]


def _well_name(found):
    """A well as plates name it: Opera's ``r02c03`` is ``B03`` (rows past Z: ``AA``...)."""
    opera = re.fullmatch(r"r0*([1-9]\d*)c0*(\d+)", found)
    if not opera:
        return found
    row, letters = int(opera[1]), ""
    while row:
        row, letter = divmod(row - 1, 26)
        letters = chr(ord("A") + letter) + letters
    return f"{letters}{int(opera[2]):02d}"


class FieldSource:
    """The ``fields`` of a screen, read one at a time (see the module docstring).

    ``fields["key"]`` is what :meth:`read` takes, ``site`` tells a well's fields apart (from 0,
    or a cell table's ``Metadata_Site``), and
    ``n_channels`` is the channels a field is read with, where known before a job runs.
    """

    fields = None
    n_channels = None

    @property
    def keys(self):
        return self.fields["key"].tolist()

    @cached_property
    def _rows(self):
        return {row.key: row for row in self.fields.itertuples(index=False)}

    def metadata(self, key):
        """The field's ``fields`` row (``plate``, ``well``, ``site``...) and ``image``, its key."""
        row = self._rows[key]._asdict()
        del row["key"]
        return {**row, "site": int(row["site"]), "image": key}

    def read(self, key):
        """``(image, cells)`` of one field: (C, H, W) pixels and one row per cell."""
        raise NotImplementedError

    def identity(self):
        """What the source's results depend on, as JSON values (for a resumable manifest)."""
        raise NotImplementedError


def _folder_names(folders):
    """Each folder's name, with as many parents as tell it apart (``treated/images``)."""
    folders = [Path(os.path.abspath(folder)) for folder in folders]
    distinct = set(folders)
    for depth in range(1, max(len(folder.parts) for folder in distinct) + 1):
        names = {folder: Path(*folder.parts[-depth:]).as_posix() for folder in distinct}
        if len(set(names.values())) == len(distinct):
            break
    return [names[folder] for folder in folders]


def _check_table_fields(cells, columns):
    """Refuse a field name for two sets of files, labels of mixed types, an object twice."""
    files = cells[["field", *columns]].drop_duplicates()
    if files["field"].duplicated().any():
        field = files.loc[files["field"].duplicated(), "field"].iloc[0]
        raise ValueError(
            f"The cell table gives field {field!r} two sets of files "
            f"({files.loc[files['field'] == field, columns].to_numpy()[:2].tolist()}); expected "
            "one field per image name. Tables of several folders: name images with their folder."
        )
    # One image under two names (./a.tif, sub/../a.tif) would be two fields. Folders are
    # resolved, not files: annexes (git-annex, DVC) link equal images to one object.
    named, folders = {}, {}
    for field, path in files[["field", columns[0]]].itertuples(index=False):
        folder, name = os.path.split(path)
        if folder not in folders:
            folders[folder] = os.path.realpath(folder or ".")
        folder = folders[folder]
        other = named.setdefault(os.path.join(folder, name), field)
        if other != field:
            raise ValueError(
                f"The cell table names one image two ways ({other!r} and {field!r}); expected "
                "one name per image, or its cells would be counted twice."
            )
    if "label" in cells:  # caught here, not after every field is profiled
        _check_one_kind(cells["label"], "label column")
    repeated = cells.duplicated(["field", OBJECT_NUMBER]) if OBJECT_NUMBER in cells else None
    if repeated is not None and repeated.any():
        field, number = cells.loc[repeated, ["field", OBJECT_NUMBER]].iloc[0]
        raise ValueError(
            f"The cell table gives object {number} of field {field!r} twice; expected one row "
            "per object of a field."
        )


def _per_field(cells, name):
    """The one value of column ``name`` (the table's ``Metadata_<Name>``) of each field."""
    values = cells.groupby("field", sort=False)[name]
    counts = values.nunique(dropna=False)
    unclear = counts.index[(counts > 1).to_numpy()].tolist()
    unclear += cells.loc[cells[name].isna(), "field"].tolist()
    if unclear:
        raise ValueError(
            f"The cell table gives field {unclear[0]!r} the Metadata_{name.title()} values "
            f"{values.unique()[unclear[0]].tolist()[:3]}; expected one per field."
        )
    _check_one_kind(cells[name], f"Metadata_{name.title()}")  # as the profiles' files hold
    return values.first().tolist()


def _check_one_kind(column, what):
    """Refuse a table column mixing value types, which the profiles' files cannot hold."""
    kind = mixed_kind(column)
    if kind:
        raise ValueError(
            f"The cell table's {what} mixes value types ({kind}, for example '1' and 1); "
            "expected one type: all names, or all numbers."
        )


def _table_sites(fields, cells):
    """A table's sites as whole numbers where each field has one and they tell a well's fields
    apart, else the numbered ``fields["site"]`` (with a warning)."""
    numbers = pd.to_numeric(cells["site"].astype(object), errors="coerce")
    per_field = numbers.groupby(cells["field"], sort=False).agg(["min", "max"])
    sites = per_field["min"].reindex(fields["key"]).to_numpy()
    whole = (
        numbers.notna().all()
        and (per_field["min"] == per_field["max"]).all()
        and (np.abs(sites) < 2**31).all()  # finite, and an int64 without overflow
        and (sites == np.round(sites)).all()
    )
    if whole and not fields.assign(site=sites).duplicated(["plate", "well", "site"]).any():
        return sites.astype(np.int64)
    warnings.warn(
        f"The cell table's Metadata_Site values ({cells['site'].unique()[:3].tolist()}...) are "
        "not one whole number per field of a well; sites are numbered in each well from 0 "
        "instead.",
        UserWarning,
        stacklevel=4,
    )
    return fields["site"]


def _folded(name):
    """A channel name as names are compared: in any case, without spaces around it."""
    return str(name).strip().casefold()


def _match_names(wanted, available):
    """Each of ``wanted`` among ``available``: itself, else the one name equal to it as
    :func:`_folded`; None where there is none, or several."""
    folded = {}
    for name in available:
        folded.setdefault(_folded(name), []).append(name)

    def match(name):
        found = [name] if name in available else folded.get(_folded(name), [])
        return found[0] if len(found) == 1 else None

    return [match(name) for name in wanted]


class TableFields(FieldSource):
    """Fields and cells of a cell table (:func:`~sklearn_deeploc.fields.read_cell_table`).

    A field's plate, well and site are the table's ``Metadata_Plate``, ``_Well``, ``_Site``
    where it has them, else the folder of its first channel file (with its parents where two
    folders share a name), its name's ``well_pattern`` and its order in the well; cells keep
    the table's ``ObjectNumber``, else are numbered in table order within their field, from
    1. Channels named as ``model_channels`` are read in that order. ``cells`` is the table.
    """

    def __init__(self, cells, well_pattern=WELL_PATTERN, model_channels=None):
        columns = file_columns(cells)
        # The model's channels by name, where the table has them all
        names = [c.removeprefix(f"{FILE_PREFIX}_") for c in columns]
        found = _match_names(model_channels or [], names)
        named = [None if name is None else f"{FILE_PREFIX}_{name}" for name in found]
        chosen = cells.attrs.get(CHANNELS_CHOSEN, False)
        if None in named and not chosen:
            choose = "read_cell_table's channels= (--channels), by name"
            _check_no_channel_moved("The cell table", names, model_channels, choose)
        if named and None not in named and named != columns and not chosen:
            warnings.warn(
                f"The cell table's channels {columns} are read in the model's order {named} "
                f"(its channels {list(model_channels)}), by name; pass channels= (--channels) "
                "to choose others.",
                UserWarning,
                stacklevel=3,
            )
            cells = cells[[c for c in cells.columns if c not in columns] + named]
        self._well_pattern = well_pattern
        # The table's other metadata (a gene) for the profiles, but names they give themselves
        self._metadata = [
            c for c in cells if str(c).startswith("Metadata_") and c not in OWN_METADATA
        ]
        self._columns = file_columns(cells)
        _check_table_fields(cells, self._columns)
        # Files as absolute paths: the table read from another folder is the same table, and
        # Dask workers started in another folder read the same files
        self.cells = cells.assign(
            **{
                column: cells[column].map({f: os.path.abspath(f) for f in cells[column].unique()})
                for column in self._columns
            }
        )
        self._cells = dict(tuple(self.cells.groupby("field", sort=False)))
        keys = list(self._cells)
        given = {name: _per_field(cells, name) for name in ("plate", "well") if name in cells}
        plates = given.get("plate") or _folder_names(
            Path(self._cells[key][self._columns[0]].iloc[0]).parent for key in keys
        )
        self.fields = _named_fields(keys, plates, well_pattern, given.get("well"))
        if "site" in cells:
            self.fields["site"] = _table_sites(self.fields, cells)
        hashed = pd.util.hash_pandas_object(self.cells, index=False)
        self._digest = sha256_hex(hashed.to_numpy().tobytes())
        # A stack's channels (the pages of one file) are known once one is read: the first,
        # so that a job refuses another count before it starts
        stack = self._columns == [FILE_PREFIX]
        first = self._cells[keys[0]].iloc[0]
        self.n_channels = len(read_field(first)) if stack else len(self._columns)

    def read(self, key):
        field = self._cells[key]
        numbers = field[OBJECT_NUMBER].to_numpy() if OBJECT_NUMBER in field else None
        cells = _numbered_cells(field["x"].to_numpy(), field["y"].to_numpy(), numbers)
        if "label" in field:
            cells["label"] = field["label"].to_numpy()
        for column in self._metadata:
            cells[column] = field[column].array  # its type kept
        return read_field(field.iloc[0]), cells

    def identity(self):
        files = {path for field in self._cells.values() for path in field[self._columns].iloc[0]}
        check_image_files(files)
        return {
            "cells": self._digest,
            "images": stat_digest(files),
            "well_pattern": self._well_pattern,
        }


def _prefixes(stem):
    """A file stem and its cuts at each separator: the names a suffixed file answers to."""
    return {stem} | {stem[: cut.start()] for cut in re.finditer(r"[-_. ]", stem)}


def _files_in(folder, suffixes):
    """The files of ``folder`` with one of ``suffixes`` (in any case)."""
    return [  # never macOS's ._ files beside a copied plate's
        path
        for path in folder.iterdir()
        if path.suffix.lower() in suffixes and path.is_file() and not path.name.startswith(".")
    ]


def _label_names(field_file, channels):
    """Names of a field's label image: its channel files' stems (segmented in the first, or in
    another: a marker), then its stem without the token."""
    stem = Path(field_file).stem
    token = channel_token(channels[0])
    stems = [token.sub(channel, stem, count=1) for channel in channels]
    return [*stems, re.sub(r"[-_. ]*$", "", token.sub("", stem, count=1))]


def _label_files(labels, field_files, channel_files, channels):
    """Each field's one label image in ``labels``, by :func:`_label_names`.

    A file belongs to the longest field name it extends (``f01_2_cp_masks`` to ``f01_2``, not
    ``f01``). Never label images: the fields' channel images, their other channels beside them
    (``f01-ch3.tiff``) and what Cellpose saves beside its masks (``_seg.npy``, ``_flows``...).
    """
    family, channel = token_family(channels), channels[0]
    names = {field: _label_names(field, channels) for field in field_files}
    owner = {name: field for field, field_names in names.items() for name in field_names}
    stems = {Path(field).stem for field in field_files}
    channel_files = {Path(f).resolve() for f in channel_files}
    image_folders = {path.parent for path in channel_files}
    found = {}
    for path in _files_in(labels, LABEL_SUFFIXES):
        resolved = path.resolve()
        if resolved in channel_files or _not_a_mask(path):
            continue
        if resolved.parent in image_folders and _another_channel(path.stem, family, channel, stems):
            continue
        matches = [name for name in _prefixes(path.stem) if name in owner]
        if matches:
            found.setdefault(max(matches, key=len), []).append(path)
    return {field: _one_label_file(found, labels, field, names[field]) for field in field_files}


def _another_channel(stem, family, channel, stems):
    """Whether ``stem`` is a field's (``stems``) image in a channel of ``family`` other than
    ``channel``, chosen or not (``w3`` beside ``w1``, ``w2``)."""
    return any(
        found[0] != channel and stem[: found.start()] + channel + stem[found.end() :] in stems
        for found in family.finditer(stem)
    )


def _not_a_mask(path):
    """Whether ``path`` is one of Cellpose's outputs other than its masks, or a thumbnail."""
    return path.name.endswith(CELLPOSE_SESSION) or path.stem.endswith(NOT_MASKS)


def _one_label_file(found, labels, field_file, names):
    """The one label image found under the first of ``names`` that has any."""
    for name in names:
        files = found.get(name, [])
        if len(files) == 1:
            return files[0]
        if len(files) > 1:
            raise ValueError(
                f"{len(files)} label images in {labels} match field {Path(field_file).name} "
                f"({sorted(p.name for p in files)[:4]}); expected one: move the others out, or "
                "pass a folder of the masks only."
            )
    raise FileNotFoundError(
        f"No label image in {labels} for field {Path(field_file).name}: expected a "
        f"{'/'.join(LABEL_SUFFIXES)} file named {names[0]}[_suffix] or {names[-1]}[_suffix] "
        "(Cellpose's _seg.npy files are not label images: save its _cp_masks)."
    )


def _natural(name):
    """Sort key reading digit runs as numbers: f2 before f10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _field_names(images, channels):
    """The folder's image files holding the first channel's token, in natural order."""
    channel, token = channels[0], channel_token(channels[0])
    names = [path.name for path in _files_in(images, FIELD_SUFFIXES) if token.search(path.name)]
    check_one_token(names, channels)
    stems = {Path(name).stem for name in names}
    # A name extending a field's (Cellpose's <field>_cp_masks.png) is its label image
    names = [n for n in names if not (_prefixes(Path(n).stem) - {Path(n).stem}) & stems]
    if not names:
        raise ValueError(
            f"No image in {images} has the channel token {channel!r} (image files: "
            f"{'/'.join(FIELD_SUFFIXES)})."
        )
    return sorted(names, key=_natural)


def _check_every_first_channel(images, names, channels):
    """Refuse a field whose other channels are in ``images`` without its first channel."""
    known, stems = set(names), {Path(name).stem for name in names}
    tokens = [channel_token(channel) for channel in channels[1:]]
    for path in _files_in(images, FIELD_SUFFIXES):
        for token in tokens:
            twin = token.sub(channels[0], path.name, count=1) if token.search(path.name) else None
            if twin and twin not in known and not _prefixes(Path(twin).stem) & stems:
                raise ValueError(
                    f"{path.name} in {images} has no {channels[0]} image ({twin}); expected "
                    "every channel of every field."
                )


def _planes_of_fields(names, images):
    """Each field's z planes at the folder's first time point (``PLANE_NAMES``), by its first
    plane's name; other names are a field of one plane."""
    planes, times, called = {}, set(), "sk"
    for name in names:
        field, time = name, None  # other names: one image, read
        for pattern, time_name in PLANE_NAMES:
            if match := pattern.search(name):
                spans = sorted(match.span(group) for group in ("plane", "time"))
                field = name[: spans[0][0]] + name[spans[0][1] : spans[1][0]] + name[spans[1][1] :]
                time, called = int(match["time"]), time_name
                break
        planes.setdefault(field, []).append((time, name))
        times.add(time)
    times.discard(None)
    first = min(times, default=None)
    if len(times) > 1:
        warnings.warn(
            f"{images} holds {len(times)} time points ({called}); the first ({called}{first}) "
            "is read.",
            UserWarning,
            stacklevel=4,
        )
    read = {field: [n for t, n in found if t in (first, None)] for field, found in planes.items()}
    absent = [found[0][1] for field, found in planes.items() if not read[field]]
    if absent:
        raise ValueError(
            f"{absent[0]} in {images} has no image at the first time point ({called}{first}); "
            "expected every field at every time point read."
        )
    return {found[0]: found for found in read.values()}


def _check_label_size(key, size, image):
    """Refuse a label image of another (height, width) ``size`` than the field (None: unknown)."""
    if size not in (None, image.shape[1:]):
        raise ValueError(
            f"Field {key}: the label image is {size[0]}x{size[1]} pixels, the field "
            f"{image.shape[1]}x{image.shape[2]}; expected one label image per field."
        )


def _check_marker(marker, n_channels):
    """Refuse a marker channel that is not one of ``n_channels``."""
    if not isinstance(marker, (int, np.integer)) or not 0 <= marker < n_channels:
        raise ValueError(
            f"marker={marker!r} is not one of the {n_channels} channels (0..{n_channels - 1}); "
            "cells are found in the marker channel where no label images are given."
        )


def _folder_plate(images):
    """The plate of a folder of images: its name, or the plate of a Harmony export's index."""
    images = images.resolve()
    if images.name.lower() != "images":
        return images.name
    for index in (images / name for name in HARMONY_INDEXES):
        if index.is_file():
            return _harmony_plate(index) or images.parent.name
    return images.name


def _harmony_plate(index):
    """The plate a Harmony index names (its ``Plate``'s ``Name``, else ``PlateID``), or None."""
    try:
        plate = _first_plate(index)
    except (ElementTree.ParseError, OSError):
        return None
    if plate is None:
        return None
    names = {_untagged(child): (child.text or "").strip() for child in plate}
    return names.get("Name") or names.get("PlateID") or None


def _first_plate(index):
    """An index's first ``Plate`` element, or None: its plates come before its wells and images,
    possibly many MB of them, which are not read."""
    for event, element in ElementTree.iterparse(index, events=("start", "end")):
        if event == "start" and _untagged(element) in ("Wells", "Images"):
            return None
        if event == "end" and _untagged(element) == "Plate":
            return element
    return None


def _untagged(element):
    """An XML element's tag without its namespace."""
    return element.tag.rsplit("}", 1)[-1]


class FolderFields(FieldSource):
    """The fields of a folder of channel images named with ``chN`` tokens (or ``channels``').

    A field is an image whose name holds the first channel's token (a name holding two channel
    tokens is refused), its other channels found by substituting the token (the token layout of
    :func:`~sklearn_deeploc.fields.read_cell_table`); the z planes of a field named by Harmony
    (``r01c01f01p02-ch1sk1...``) or CellVoyager (``T0001F001L01A01Z02C01``) are projected by
    their maximum, and the folder's first time point read; ``planes`` lists each field's plane
    files.
    Its cells are the objects of its label image in the folder ``labels``, named after its first
    channel file with or without the token, then nothing or a separator and any suffix
    (``r01c01f01-ch1_cp_masks.png``, ``r01c01f01.tiff``), else found in channel ``marker``. The
    plate is the folder's name (a Harmony export's ``Images``: the plate its index names).
    """

    def __init__(self, images, channels=None, labels=None, *, marker=1, well_pattern=WELL_PATTERN):
        images = Path(os.path.abspath(images))  # Dask workers may start in another folder
        if not images.is_dir():
            raise ValueError(f"images={images} is not a folder of field images.")
        self._channels = list(channels or TOKEN_CHANNELS)
        names = _field_names(images, self._channels)
        _check_every_first_channel(images, names, self._channels)
        self.planes = _planes_of_fields(names, images)
        names = [name for planes in self.planes.values() for name in planes]
        table = read_cell_table(
            pd.DataFrame({"Image Path": names, "Center_X": 0, "Center_Y": 0}),
            layout="token",
            channels=self._channels,
            folder=images,
        )
        self._files = dict(zip(names, table[file_columns(table)].to_numpy().tolist()))
        self._labels = {}
        if labels is not None:
            labels = Path(os.path.abspath(labels))
            if not labels.is_dir():
                raise ValueError(f"labels={labels} is not a folder of label images.")
            channel_files = [f for files in self._files.values() for f in files]
            self._labels = _label_files(labels, list(self.planes), channel_files, self._channels)
        if not self._labels:
            _check_marker(marker, len(self._channels))
        self.n_channels = len(self._channels)
        self._marker, self._well_pattern = marker, well_pattern
        self.fields = _named_fields(list(self.planes), _folder_plate(images), well_pattern)

    def read(self, key):
        image = read_field(self._files[key])
        for plane in self.planes[key][1:]:
            pixels = read_field(self._files[plane])
            if pixels.shape != image.shape:
                raise ValueError(
                    f"Field {key}: its z plane {plane} is {pixels.shape}, its first plane "
                    f"{image.shape}; expected planes of one size."
                )
            image = np.maximum(image, pixels)
        if not self._labels:
            return image, _cells_found(image, self._marker)
        path = self._labels[key]
        _check_label_size(key, header_size(path), image)  # a small file can claim GBs
        labels = read_label_image(path)
        _check_label_size(key, labels.shape, image)
        return image, cells_from_labels(labels, image)

    def identity(self):
        files = [path for paths in self._files.values() for path in paths]
        check_image_files(files)
        return {
            "plate": self.fields["plate"].iloc[0],  # a Harmony export's: from its index
            "images": stat_digest(files),
            "labels": stat_digest(self._labels.values()) if self._labels else None,
            "channels": self._channels,
            "marker": None if self._labels else self._marker,
            "well_pattern": self._well_pattern,
        }


def plate_channels(plate, channel_names):
    """The channels to read from a plate for a model with these channel names.

    The model's channel names (in any case) where the plate names them all, else every
    channel of the plate where it has as many as the model.
    """
    first = plate.fields["image_path"].iloc[0]
    names = plate.channel_names(first)
    named = _match_names(channel_names, names or [])
    if names is not None and None not in named:
        return named
    if names is not None and plate.sizes(first).get("c", 1) == len(channel_names):
        _check_no_channel_moved(f"Plate {plate.path}", names, channel_names)
        return list(range(len(channel_names)))
    stored = f"channels {names}" if names is not None else "unnamed channels (no omero metadata)"
    raise ValueError(
        f"Plate {plate.path} has {stored}; the model takes {len(channel_names)} "
        f"({channel_names}). Pass channels= (names or indices, in the model's order)."
    )


def _check_no_channel_moved(where, names, channel_names, choose="channels= (names or indices)"):
    """Refuse reading by position channels ``names`` that hold a model channel elsewhere;
    ``choose`` says how to choose them."""
    stored = [_folded(name) for name in names]
    for k, channel in enumerate(channel_names):
        position = stored.index(_folded(channel)) if _folded(channel) in stored else k
        if position != k:
            raise ValueError(
                f"{where} has channels {list(names)}: the model's channel {k} ({channel!r}) is "
                f"its channel {position}, but not every model channel ({list(channel_names)}) is "
                f"named there, so they would be read by position. Choose them with {choose}, in "
                "the model's order."
            )


def _check_same_positions(plate, indices):
    """Refuse fields that name a channel read by position differently (channels chosen here)."""
    named = {}
    for image_path in plate.fields["image_path"]:
        names = plate.channel_names(image_path) or []
        for k in indices:
            name = names[k] if k < len(names) else ""
            if name and named.setdefault(k, (name, image_path))[0] != name:
                raise ValueError(
                    f"Plate {plate.path}: stored channel {k} is {named[k][0]!r} in field "
                    f"{named[k][1]} but {name!r} in field {image_path}; read by position, the "
                    "fields' channels would mix. Name every field's channels, or pass channels=."
                )


class PlateFields(FieldSource):
    """The fields of an OME-Zarr HCS plate (:func:`~sklearn_deeploc.plates.open_plate`).

    ``channels`` are names (matched as the model's are: in any case, spaces around them
    ignored) or indices in the model's order (default: :func:`plate_channels` of
    ``model_channels``, else all); ``labels`` names the label images (``labels/<name>``)
    giving each field's cells, else they are found in channel ``marker``. Every field's
    metadata is checked when the source is made.
    """

    def __init__(self, plate, channels=None, labels=None, *, marker=1, model_channels=None):
        # Absolute: Dask workers may start in another folder
        self._path, self._labels, self._marker = os.path.abspath(plate), labels, marker
        if not len(self._plate.fields):
            raise ValueError(f"Plate {self._path} lists no field.")
        defaulted = channels is None
        first = self._plate.fields["image_path"].iloc[0]
        if defaulted and model_channels is not None:
            channels = plate_channels(self._plate, model_channels)
        elif not defaulted:  # names as the plate spells them ("GFP " for "gfp")
            spelled = _match_names(channels, self._plate.channel_names(first) or [])
            channels = [c if s is None else s for c, s in zip(channels, spelled)]
        self._plate.check(channels, labels)
        indices = self._plate.channel_indices(first, channels)
        names, sizes = self._plate.channel_names(first), self._plate.sizes(first)
        if sizes.get("t", 1) > 1:
            warnings.warn(
                f"Plate {self._path} has {sizes['t']} time points; the first (t=0) is read.",
                stacklevel=2,
            )
        if names and all(names) and len(set(names)) == len(names) == sizes.get("c", 1):
            # Read by name in every field: a field storing them in another order is read right
            self.channels = [names[k] for k in indices]
            self._plate.check(self.channels, labels)
        else:
            self.channels = indices
            if defaulted:
                _check_same_positions(self._plate, indices)
        self.n_channels = len(indices)
        if labels is None:
            _check_marker(marker, self.n_channels)
        fields = self._plate.fields.rename(columns={"image_path": "key"})
        # Acquisitions (runs of imaging) of one well are kept apart where the plate has several
        several = fields["acquisition"].nunique(dropna=False) > 1
        self.fields = fields[["key", "plate", "well", "site", *["acquisition"] * several]]

    @cached_property
    def _plate(self):
        from .plates import open_plate

        return open_plate(self._path)

    def __getstate__(self):  # workers reopen the plate: a zarr group is not shipped
        state = self.__dict__.copy()
        state.pop("_plate", None)
        return state

    def read(self, key):
        image = self._plate.read_field(key, self.channels)
        if self._labels is None:
            return image, _cells_found(image, self._marker)
        # read_labels checks the label image's size against the field's
        return image, cells_from_labels(self._plate.read_labels(key, self._labels), image)

    def identity(self):
        root = Path(self._path).resolve()
        # The fields' files and the metadata above them: not a screen's output in the plate
        fields = [root / key for key in self.keys]
        above = {f for field in fields for f in field.parents if f.is_relative_to(root)}
        files = [path for folder in above for path in folder.iterdir() if path.is_file()]
        files += [path for field in fields for path in tree_files(field)]
        return {
            "plate": str(root),
            "version": self._plate.version,
            "files": stat_digest(files),
            "channels": self.channels,
            "labels": self._labels,
            "marker": None if self._labels else self._marker,
        }


class Prefetched(FieldSource):
    """``source`` reading the next of ``keys`` in a background thread while one is processed.

    At most two fields are in memory. Use it as a context manager, reading ``keys`` in order.
    """

    def __init__(self, source, keys):
        self._source, self.fields = source, source.fields
        self._following = dict(zip(keys, list(keys)[1:]))
        self._pool, self._reads = ThreadPoolExecutor(1), {}

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self._pool.shutdown(wait=True, cancel_futures=True)

    def identity(self):
        return self._source.identity()

    def read(self, key):
        read = self._reads.pop(key, None) or self._pool.submit(self._source.read, key)
        following = self._following.get(key)
        if following is not None and following not in self._reads:
            self._reads[following] = self._pool.submit(self._source.read, following)
        return read.result()

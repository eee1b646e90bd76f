"""OME-Zarr HCS plates: list their fields, read one field (or its label image) at a time.

A plate (NGFF 0.4 on Zarr v2, metadata in ``.zattrs``; NGFF 0.5 on Zarr v3, metadata
under ``"ome"`` in ``zarr.json``) lists its wells (``"A/1"``), each well its fields
(images ``"A/1/0"``), each field a multiscale image whose level 0 is read, with channel
names in ``omero.channels[].label`` and label images under ``labels/<name>``.
"""

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from .labels import check_label_image
from .validation import check_fits_memory

ZARR_VERSION_OF_NGFF = {"0.4": 2, "0.5": 3}
AXES = ("t", "c", "z", "y", "x")
AXIS_OF_TYPE = {"time": "t", "channel": "c"}  # space axes are told apart by their names
NGFF_KEYS = {"plate", "well", "multiscales", "omero", "labels", "image-label"}
FIELD_COLUMNS = ("plate", "well", "well_path", "row", "column", "site", "acquisition", "image_path")


def _zarr_format(group):
    """The group's Zarr format: 2 or 3 (zarr 2 groups have no ``metadata``, and are v2)."""
    metadata = getattr(group, "metadata", None)
    return getattr(metadata, "zarr_format", 2)


def _open_root(path):
    """The plate's root group, refusing a missing path or a store zarr cannot read."""
    try:
        import zarr
    except ImportError as error:
        raise ImportError(
            "Reading OME-Zarr plates needs zarr; pip install 'sklearn-deeploc[plates]'."
        ) from error
    local = Path(path)
    if not local.exists():
        raise FileNotFoundError(f"Plate {path} not found.")
    if local.is_file():
        raise ValueError(
            f"Plate {path} is a file; expected a plate folder (unzip a zipped plate first)."
        )
    zarr3 = int(zarr.__version__.split(".")[0]) >= 3
    if (local / "zarr.json").is_file() and not zarr3:
        raise ValueError(
            f"Plate {path} is a Zarr v3 store (NGFF 0.5); reading it needs zarr>=3, "
            f"found zarr {zarr.__version__}."
        )
    # Not a consolidated copy of the metadata: one made before a field was added or rewritten
    # would list old fields and channels
    fresh = {"use_consolidated": False} if zarr3 else {}
    try:
        return zarr.open_group(str(path), mode="r", **fresh)
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise ValueError(
            f"{path} is not a Zarr group (no .zgroup/.zattrs or zarr.json): {error}"
        ) from error


def _ngff_metadata(group, where):
    """The group's NGFF metadata: top-level attributes (Zarr v2) or those under "ome" (v3)."""
    try:
        attributes = group.attrs.asdict()
    except json.JSONDecodeError as error:  # zarr 2 reads them only now
        raise ValueError(f"{where}: its metadata is damaged (not JSON: {error}).") from None
    if _zarr_format(group) == 2:
        return attributes
    if isinstance(attributes.get("ome"), dict):
        return attributes["ome"]
    if NGFF_KEYS & set(attributes):
        raise ValueError(
            f"{where} is a Zarr v3 group whose NGFF metadata (keys {sorted(attributes)}) is "
            "not under an 'ome' entry; NGFF 0.5 keeps its metadata under 'ome'."
        )
    return {}


def _plate_version(metadata, zarr_format, path):
    """The NGFF version, which must be the one of the store's Zarr version."""
    if zarr_format == 3:
        version = metadata.get("version", metadata["plate"].get("version"))
    else:  # 0.4 plates usually name it; without, a Zarr v2 plate is taken as 0.4
        version = metadata["plate"].get("version", "0.4")
    if ZARR_VERSION_OF_NGFF.get(str(version)) != zarr_format:
        raise ValueError(
            f"Plate {path} declares NGFF version {version!r} on Zarr v{zarr_format}; "
            "supported are NGFF 0.4 on Zarr v2 and 0.5 on Zarr v3."
        )
    return str(version)


@contextmanager
def _ngff_parsing(where):
    """Refuse NGFF metadata lacking a key or holding a value of another type, naming ``where``."""
    try:
        yield
    except (KeyError, TypeError, IndexError, AttributeError) as error:
        raise ValueError(
            f"{where} has metadata that is not NGFF 0.4/0.5 ({type(error).__name__}: {error}); "
            "expected the keys and types of the OME-Zarr specification."
        ) from None


def _member(root, key, where, what):
    """The group or array at ``key``, refusing a missing one or one with damaged metadata."""
    try:
        return root[key]
    except KeyError:
        raise ValueError(f"{where}: its {what} {key!r} is missing from the plate.") from None
    except json.JSONDecodeError as error:  # a metadata file cut short by a copy
        raise ValueError(
            f"{where}: the metadata of its {what} {key!r} is damaged (not JSON: {error})."
        ) from None


def _levels_axes(metadata, where):
    """Axis names and level-0 path of a multiscale image's metadata."""
    multiscales = metadata.get("multiscales")
    if not multiscales:
        raise ValueError(
            f"{where} has no 'multiscales' metadata (keys {sorted(metadata)}); expected a "
            "multiscale image."
        )
    if not multiscales[0].get("datasets"):
        raise ValueError(f"{where} lists no resolution level ('datasets' is empty).")
    axes = [_axis_name(axis) for axis in multiscales[0]["axes"]]
    if not set(axes) <= set(AXES) or not {"y", "x"} <= set(axes) or len(set(axes)) < len(axes):
        raise ValueError(f"{where} has axes {axes}; expected y, x and some of t, c, z.")
    return axes, multiscales[0]["datasets"][0]["path"]


def _axis_name(axis):
    """An axis as one of ``AXES``: by its type, else its name in lower case (iohub: "T", "C")."""
    if not isinstance(axis, dict):  # NGFF 0.3: names only
        return str(axis).lower()
    return AXIS_OF_TYPE.get(axis.get("type"), str(axis.get("name", "")).lower())


class Plate:
    """An opened OME-Zarr HCS plate; make one with :func:`open_plate`.

    Attributes
    ----------
    path : str
        The plate's location.
    name : str
        Its metadata's ``name``, else the folder's without ``.zarr``.
    version : str
        The NGFF version, ``"0.4"`` or ``"0.5"``.
    fields : pandas.DataFrame
        One row per field: ``plate``, ``well`` (``"A01"``), ``well_path`` (``"A/1"``),
        ``row``, ``column`` (the plate's names), ``site`` (from 0 in its well and
        acquisition), ``acquisition`` (the image's NGFF acquisition, missing where not given) and
        ``image_path`` (``"A/1/0"``), the key :meth:`read_field` and :meth:`read_labels` take.
    """

    def __init__(self, path, root, version, name, fields):
        self.path, self.name, self.version = str(path), name, version
        self._root, self.fields = root, fields
        self._images = {}  # key -> (level-0 array, sizes, channel names): metadata is read once

    def __repr__(self):
        return f"Plate({self.path!r}, NGFF {self.version}, {len(self.fields)} fields)"

    def _where(self, image_path):
        return f"Field {image_path} of plate {self.path}"

    def _image(self, key, where):
        """(level-0 array, {axis: size} in axis order, channel names) of the image at ``key``."""
        if key not in self._images:
            metadata = _ngff_metadata(_member(self._root, key, where, "image"), where)
            with _ngff_parsing(where):
                axes, level0 = _levels_axes(metadata, where)
                names = _channel_names(metadata)
            array = _member(self._root, f"{key}/{level0}", where, "level-0 array")
            if array.ndim != len(axes):
                raise ValueError(
                    f"{where}: level 0 has {array.ndim} dimensions {array.shape}, its metadata "
                    f"{len(axes)} axes {axes}."
                )
            self._images[key] = array, dict(zip(axes, array.shape)), names
        return self._images[key]

    def sizes(self, image_path):
        """The field's level-0 size on each axis, in stored order: ``{"c": 2, "y": 64, ...}``."""
        return dict(self._image(image_path, self._where(image_path))[1])

    def channel_names(self, image_path):
        """The field's channel names (``omero.channels[].label``), or None without them."""
        return self._image(image_path, self._where(image_path))[2]

    def channel_indices(self, image_path, channels=None):
        """The stored indices of ``channels`` in a field: names, or indices (integers, or digits
        naming no channel, as a command line gives them); default all."""
        _, sizes, names = self._image(image_path, self._where(image_path))
        n_channels = sizes.get("c", 1)
        if channels is None:
            return list(range(n_channels))
        indices = []
        for channel in channels:
            if isinstance(channel, str) and channel.isdecimal() and channel not in (names or []):
                channel = int(channel)
            if isinstance(channel, (int, np.integer)) and 0 <= channel < n_channels:
                indices.append(int(channel))
            elif isinstance(channel, str) and names is not None and channel in names:
                if len(names) != n_channels or names.count(channel) > 1:
                    raise ValueError(
                        f"{self._where(image_path)} names its {n_channels} stored channel(s) "
                        f"{names}: {channel!r} is not one channel. Pass channels= as indices."
                    )
                indices.append(names.index(channel))
            else:
                known = f"names {names} or " if names is not None else "(no names) "
                raise ValueError(
                    f"{self._where(image_path)} has no channel {channel!r}; it has channel "
                    f"{known}indices 0..{n_channels - 1}."
                )
        if len(set(indices)) < len(indices):
            raise ValueError(f"channels {list(channels)} name a channel twice.")
        return indices

    def label_names(self, image_path):
        """The names of the field's label images (``labels/<name>``), possibly none."""
        where = self._where(image_path)
        self._image(image_path, where)
        if f"{image_path}/labels" not in self._root:
            return []
        group = _member(self._root, f"{image_path}/labels", where, "labels group")
        with _ngff_parsing(f"The labels group of field {image_path} of plate {self.path}"):
            return [str(name) for name in _ngff_metadata(group, where).get("labels", [])]

    def read_field(self, image_path, channels=None, *, z="max", t=0):
        """Read one field's level 0 as (C, H, W), channels in the order asked, a z plane at a time.

        Parameters
        ----------
        image_path : str
            The field, a ``fields["image_path"]`` value (``"A/1/0"``).
        channels : sequence of str or int, optional
            Channel names (``omero.channels[].label``) or indices, in the
            order wanted; default all, in the stored order.
        z : "max" or int, default="max"
            A z stack is projected by its maximum, or one plane is taken.
        t : int, default=0
            The time point read.

        Returns
        -------
        numpy.ndarray of shape (C, H, W)
            The pixels in the stored type.
        """
        where = self._where(image_path)
        array, sizes, _ = self._image(image_path, where)
        indices = self.channel_indices(image_path, channels)
        if indices == list(range(sizes.get("c", 1))):
            indices = slice(None)  # all, in order: zarr reads a slice faster
        index = {"t": _position(t, sizes, "t", where), "c": indices}
        if isinstance(z, str) and z == "max":
            planes = range(sizes.get("z", 1))
        else:
            planes = [_position(z, sizes, "z", where)]
        field = None
        for plane in planes:
            pixels = _read_plane(array, sizes, {**index, "z": plane}, where)
            field = pixels if field is None else np.maximum(field, pixels, out=field)
        return field

    def _label_image(self, image_path, name):
        """(level-0 array, sizes, where) of a field's label image, checked on its metadata."""
        where = self._where(image_path)
        names = self.label_names(image_path)
        if name not in names:
            raise ValueError(f"{where} has no label image {name!r}; it has {names or 'none'}.")
        label_where = f"Label image {name!r} of field {image_path} of plate {self.path}"
        array, sizes, _ = self._image(f"{image_path}/labels/{name}", label_where)
        if sizes.get("c", 1) != 1:
            raise ValueError(f"{label_where} has {sizes['c']} channels; expected one.")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"{label_where} holds {array.dtype} values; expected integer labels "
                "(0 = background)."
            )
        _, field, _ = self._image(image_path, where)
        if (sizes["y"], sizes["x"]) != (field["y"], field["x"]):
            raise ValueError(
                f"{label_where} is {sizes['y']}x{sizes['x']} pixels; the field's images are "
                f"{field['y']}x{field['x']}."
            )
        return array, sizes, label_where

    def read_labels(self, image_path, name, *, z=None, t=0):
        """Read a field's label image ``labels/<name>`` at full resolution as (H, W).

        Parameters
        ----------
        image_path : str
            The field, a ``fields["image_path"]`` value.
        name : str
            The label image's name, one of :meth:`label_names`.
        z : int, optional
            The plane of a 3-D label image; default its only plane (several are refused:
            planes cannot be merged).
        t : int, default=0
            The time point, where the label image has several.

        Returns
        -------
        numpy.ndarray of shape (H, W)
            Integer labels, 0 the background; the shape of the field's images.
        """
        array, sizes, where = self._label_image(image_path, name)
        if z is None and sizes.get("z", 1) > 1:
            raise ValueError(
                f"{where} has {sizes['z']} z planes; expected a 2-D label image (or pass z= "
                "to Plate.read_labels)."
            )
        index = {"t": _position(t, sizes, "t", where), "z": _position(z or 0, sizes, "z", where)}
        return check_label_image(_read_plane(array, sizes, index, where)[0], where)

    def check(self, channels=None, labels=None, limit=10):
        """Refuse, before any pixel is read, a plate whose fields cannot all be read as asked.

        Every field's metadata is read: its image and level 0 exist, the ``channels`` are
        known and the label image ``labels`` (if given) has the field's height and width and one
        z plane. One ValueError lists the fields that cannot be read and why.

        Parameters
        ----------
        channels : sequence of str or int, optional
            As in :meth:`read_field`.
        labels : str, optional
            A label image name, as in :meth:`read_labels`.
        limit : int, default=10
            At most this many problems are listed.
        """
        problems = []
        for image_path in self.fields["image_path"]:
            try:
                self.channel_indices(image_path, channels)
                if labels is not None:
                    _, sizes, where = self._label_image(image_path, labels)
                    if sizes.get("z", 1) > 1:
                        raise ValueError(
                            f"{where} has {sizes['z']} z planes; expected a 2-D label image, "
                            "one plane per field."
                        )
            except ValueError as error:
                problems.append(str(error))
        if problems:
            more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
            raise ValueError(
                f"{len(problems)} of {len(self.fields)} fields cannot be read{more}: "
                + " | ".join(problems[:limit])
            )


def _channel_names(metadata):
    """The ``omero.channels[].label`` of an image's metadata, or None without them."""
    channels = metadata.get("omero", {}).get("channels")
    return None if channels is None else [str(c.get("label", "")) for c in channels]


def _position(value, sizes, axis, where):
    """``value`` as a position on ``axis`` (of size 1 where absent), refusing one beyond it."""
    size = sizes.get(axis, 1)
    if not isinstance(value, (int, np.integer)) or not 0 <= value < size:
        raise ValueError(f"{where} has {size} {axis} position(s); {axis}={value!r} is not one.")
    return int(value)


def _read_plane(array, sizes, index, where):
    """Read ``array[index]`` (t and z by position; c a list or slice) as (C, H, W)."""
    selection = tuple(index.get(axis, slice(None)) for axis in sizes)
    chosen = index.get("c", slice(None))
    n_channels = len(range(sizes.get("c", 1))[chosen] if isinstance(chosen, slice) else chosen)
    check_fits_memory(  # before decoding: metadata can claim any size
        1,
        n_channels * sizes["y"] * sizes["x"] * array.dtype.itemsize,
        what=f"{where}, whose metadata claims {n_channels}x{sizes['y']}x{sizes['x']} "
        f"{array.dtype} pixels,",
        expected="a field that fits in memory",
    )
    try:
        pixels = array.oindex[selection]
    except (RuntimeError, ValueError, OSError) as error:  # a damaged chunk, named by nobody
        raise ValueError(f"{where}: cannot read its pixels ({error}).") from error
    kept = [axis for axis in sizes if axis in "cyx"]  # in stored order: NGFF allows x before y
    pixels = np.ascontiguousarray(
        pixels.transpose([kept.index(axis) for axis in "cyx" if axis in kept])
    )
    return pixels if "c" in sizes else pixels[np.newaxis]


def _fields_of_well(root, well, plate_name, path):
    """One row per field of a well, in the order of ``FIELD_COLUMNS``."""
    well_path = str(well["path"])
    where = f"Well {well_path} of plate {path}"
    metadata = _ngff_metadata(_member(root, well_path, where, "well group"), where)
    if "well" not in metadata:
        raise ValueError(f"{where} has no 'well' metadata (keys {sorted(metadata)}).")
    if well_path.count("/") != 1:
        raise ValueError(f"{where}: expected a well path 'row/column' (NGFF HCS).")
    row, column = well_path.split("/")
    well = f"{row}{int(column):02d}" if column.isdigit() else row + column  # "A/1" -> "A01"
    names = (plate_name, well, well_path, row, column)
    with _ngff_parsing(where):
        images = metadata["well"].get("images") or []
        rows = [
            (*names, site, image.get("acquisition"), f"{well_path}/{image['path']}")
            for site, image in enumerate(images)
        ]
    odd = [row[-2] for row in rows if type(row[-2]) not in (int, type(None))]
    if odd:
        raise ValueError(
            f"{where} gives an image the acquisition {odd[0]!r}; expected NGFF's integer id."
        )
    return rows


def open_plate(path):
    """Open an OME-Zarr HCS plate (NGFF 0.4 or 0.5) and list its fields; no pixel is read.

    Parameters
    ----------
    path : path-like
        The plate's folder (``plate.zarr``).

    Returns
    -------
    Plate
        With ``fields`` (one row per field), :meth:`Plate.read_field` and :meth:`Plate.read_labels`.

    Examples
    --------
    >>> import tempfile, numpy as np, zarr
    >>> from pathlib import Path
    >>> from sklearn_deeploc.plates import open_plate
    >>> path = Path(tempfile.mkdtemp()) / "screen.zarr"
    >>> root = zarr.open_group(path, mode="w", zarr_format=2)
    >>> root.attrs["plate"] = {"version": "0.4", "rows": [{"name": "A"}],
    ...     "columns": [{"name": "1"}], "wells": [{"path": "A/1", "rowIndex": 0, "columnIndex": 0}]}
    >>> root.create_group("A/1").attrs["well"] = {"images": [{"path": "0"}]}
    >>> image = root.create_group("A/1/0")
    >>> image.attrs["multiscales"] = [{"version": "0.4", "axes": ["c", "y", "x"],
    ...     "datasets": [{"path": "0"}]}]
    >>> image.attrs["omero"] = {"channels": [{"label": "GFP"}, {"label": "RFP"}]}
    >>> image.create_array("0", data=np.arange(24, dtype=np.uint16).reshape(2, 3, 4))
    <...>
    >>> plate = open_plate(path)
    >>> plate.fields[["well", "site", "image_path"]]
      well  site image_path
    0  A01     0      A/1/0
    >>> plate.read_field("A/1/0", ["RFP"]).shape
    (1, 3, 4)
    >>> plate.sizes("A/1/0")
    {'c': 2, 'y': 3, 'x': 4}
    """
    root = _open_root(path)
    metadata = _ngff_metadata(root, f"Plate {path}")
    if "plate" not in metadata:
        kind = " (it is a single image, not a plate)" if "multiscales" in metadata else ""
        raise ValueError(
            f"{path} is not an OME-Zarr HCS plate{kind}: its metadata has keys "
            f"{sorted(metadata)}; expected 'plate'."
        )
    with _ngff_parsing(f"Plate {path}"):
        version = _plate_version(metadata, _zarr_format(root), path)
        folder = Path(path).name.removesuffix(".zarr").removesuffix(".ome")
        name = str(metadata["plate"].get("name") or folder)
        wells = metadata["plate"].get("wells") or []
        rows = [row for well in wells for row in _fields_of_well(root, well, name, path)]
    fields = pd.DataFrame(rows, columns=list(FIELD_COLUMNS))
    acquisitions = [row[FIELD_COLUMNS.index("acquisition")] for row in rows]
    if {type(a) for a in acquisitions} == {int, type(None)}:  # NGFF's ids: None, not NaN or 1.0
        fields["acquisition"] = pd.array(acquisitions, dtype="Int64")
    # Sites of a well are numbered in each acquisition: its images are the same sites again
    fields["site"] = fields.groupby(["well_path", "acquisition"], dropna=False).cumcount()
    repeated = fields.loc[fields["image_path"].duplicated(), "image_path"]
    if len(repeated):
        raise ValueError(
            f"Plate {path} lists field {repeated.iloc[0]} twice (its plate metadata repeats a "
            "well, or its well metadata an image); expected each field once."
        )
    paths = fields.groupby("well")["well_path"].unique()
    clashes = paths[paths.map(len) > 1]
    if len(clashes):
        raise ValueError(
            f"Plate {path} has wells {list(clashes.iloc[0])}, all named {clashes.index[0]}; "
            "expected one path per well."
        )
    return Plate(path, root, version, name, fields)

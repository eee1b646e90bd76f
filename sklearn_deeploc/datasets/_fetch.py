"""Fetching the published DeepLoc model and datasets into a local data home.

Each archive is downloaded with pooch, unpacked within the bounds below beside its final place,
checked, given a completion marker (every file and its size) and renamed into place. A folder
whose marker does not match is built again; a leftover archive is reused only if whole.
"""

import json
import os
import shutil
import zipfile
import zlib
from collections import namedtuple
from pathlib import Path, PurePosixPath

import pooch
import requests

from .._files import build_folder

# size (bytes) and sha256 are checked when known; until measured on the published files, archives
# are checked by structure (zip CRCs, then the TF importer or the HDF5 reader on every tensor).
Archive = namedtuple("Archive", ["url", "folder", "size", "sha256"], defaults=(None, None))
PUBLISHED_AT = "http://spidey.ccbr.utoronto.ca/~okraus/"
MODELS = {"chong": Archive(PUBLISHED_AT + "pretrained_DeepLoc.zip", "deeploc-chong")}
DATASETS = Archive(PUBLISHED_AT + "DeepLoc_full_datasets.zip", "DeepLoc_full_datasets")
DATA_HOME_VARIABLE = "SKLEARN_DEEPLOC_DATA"
DOWNLOAD_RETRIES = 2
HDF5_SUFFIXES = (".hdf5", ".h5")
COMPLETE_MARKER = ".fetched.json"

# Bounds on unpacking, so that a hostile or corrupt archive cannot fill the disk. The published
# archives' float64 images and float32 weights deflate about 6:1 and 1.1:1; a bomb 1000:1.
MAX_EXTRACTED_BYTES = 64 * 2**30
MAX_COMPRESSION_RATIO = 100
RATIO_FREE_BYTES = 2**20  # members this small may inflate more: they cannot fill a disk
EXTRACT_CHUNK_BYTES = 2**16  # as shutil.copyfileobj: larger chunks unpack slower here
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError)  # what a damaged zip raises


def get_data_home(data_home=None):
    """The folder where fetched models and datasets are kept (created if needed).

    Parameters
    ----------
    data_home : str or path-like, optional
        Used as is when given. Otherwise the ``SKLEARN_DEEPLOC_DATA``
        environment variable, else ``~/sklearn_deeploc_data``.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_deeploc.datasets import get_data_home
    >>> home = get_data_home(tempfile.mkdtemp() + "/deeploc")
    >>> home.is_dir(), home.name
    (True, 'deeploc')
    """
    if data_home is None:
        data_home = os.environ.get(DATA_HOME_VARIABLE) or Path("~") / "sklearn_deeploc_data"
    data_home = Path(data_home).expanduser()
    try:
        data_home.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise ValueError(
            f"data_home must be a folder; {data_home} is a file or lies under one."
        ) from error
    return data_home


def _discard_if_damaged(path, archive):
    """Delete a leftover archive unless whole: pooch reuses it unchecked when no hash is known."""
    if not path.is_file():
        return
    try:
        _check_size_and_hash(path, archive, check_hash=True)
        with zipfile.ZipFile(path) as leftover:
            damaged = leftover.testzip()  # reads every member, checking its CRC
    except (ValueError, OSError, *_ZIP_ERRORS):
        damaged = True
    if damaged is not None:
        path.unlink(missing_ok=True)


def _download(archive, url, data_home):
    """Download ``url`` into ``data_home`` with pooch; a clear error when it cannot."""
    file_name = Path(archive.url).name
    _discard_if_damaged(data_home / file_name, archive)
    fetcher = pooch.create(
        path=data_home,
        base_url="",
        registry={file_name: None if archive.sha256 is None else f"sha256:{archive.sha256}"},
        urls={file_name: url},
        retry_if_failed=DOWNLOAD_RETRIES,
    )
    try:
        return Path(fetcher.fetch(file_name, progressbar=True))
    except requests.exceptions.RequestException as error:
        raise ConnectionError(
            f"Could not download {url} ({error}). Download it by hand, for example in a "
            f"browser, then pass the file: archive='{file_name}'."
        ) from error


def _check_size_and_hash(path, archive, *, check_hash):
    """Refuse an archive whose size or sha256 differs from the published one (when known)."""
    size = path.stat().st_size
    if archive.size is not None and size != archive.size:
        raise ValueError(f"{path} has {size} bytes; the published archive has {archive.size}.")
    if check_hash and archive.sha256 is not None:
        sha256 = pooch.file_hash(path)
        if sha256 != archive.sha256:
            raise ValueError(
                f"{path} has SHA256 hash {sha256}; the published archive has {archive.sha256}."
            )


def _check_listing(path, members, destination):
    """Refuse, before writing, too many bytes or a member too inflated, escaping or encrypted."""
    total = sum(member.file_size for member in members)
    if total > MAX_EXTRACTED_BYTES:
        raise ValueError(
            f"{path} would unpack to {total} bytes; the limit is "
            f"MAX_EXTRACTED_BYTES = {MAX_EXTRACTED_BYTES} bytes."
        )
    for member in members:
        what = f"{path}: member {member.filename}"
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > RATIO_FREE_BYTES and ratio > MAX_COMPRESSION_RATIO:
            raise ValueError(
                f"{what} inflates {member.compress_size} bytes to {member.file_size} "
                f"({ratio:.0f}:1); the limit is MAX_COMPRESSION_RATIO = "
                f"{MAX_COMPRESSION_RATIO}:1 for members over {RATIO_FREE_BYTES} bytes."
            )
        name = PurePosixPath(member.filename)
        if name.is_absolute() or ".." in name.parts:
            raise ValueError(f"{what} would unpack outside its folder.")
        if member.flag_bits & 0x1:
            raise ValueError(f"{what} is encrypted.")
    free = shutil.disk_usage(destination).free
    if total > free:
        raise ValueError(f"{path} would unpack to {total} bytes; {destination} has {free} free.")


def _extract_member(archive, member, destination):
    """Stream one member to disk in bounded chunks, never past the size its listing declares."""
    target = destination / member.filename
    if member.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with archive.open(member) as source, open(target, "wb") as sink:
        while chunk := source.read(EXTRACT_CHUNK_BYTES):
            written += len(chunk)
            if written > member.file_size:
                raise ValueError(
                    f"{archive.filename}: member {member.filename} inflates past the "
                    f"{member.file_size} bytes the archive lists for it."
                )
            sink.write(chunk)


def _unzip(path, destination):
    """Extract a zip within the bounds, checking every member's CRC (else a ValueError)."""
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            _check_listing(path, members, destination)
            for member in members:
                _extract_member(archive, member, destination)
    except (*_ZIP_ERRORS, NotImplementedError) as error:
        raise ValueError(f"{path} is not a complete zip archive: {error}") from error
    except (FileExistsError, IsADirectoryError, NotADirectoryError) as error:
        raise ValueError(f"{path} holds a file and a folder of the same name: {error}") from error


def _is_complete(folder):
    """Whether ``folder`` holds its marker and every file listed there, at its size."""
    try:
        sizes = json.loads((folder / COMPLETE_MARKER).read_text())
        return bool(sizes) and all((folder / f).stat().st_size == n for f, n in sizes.items())
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def _fetch_folder(archive, build, *, data_home, url, local_archive):
    """The finished folder of ``archive`` in the data home, downloaded and built if needed."""
    data_home = get_data_home(data_home)
    final = data_home / archive.folder
    if _is_complete(final):
        return final
    downloaded = local_archive is None
    path = _download(archive, url or archive.url, data_home) if downloaded else Path(local_archive)
    if not path.is_file():
        raise FileNotFoundError(f"archive {path} not found.")

    def build_marked(folder):
        """Build, then record (last) every file of ``folder`` and its size."""
        build(path, folder)
        files = sorted(file for file in folder.rglob("*") if file.is_file())
        sizes = {str(file.relative_to(folder)): file.stat().st_size for file in files}
        (folder / COMPLETE_MARKER).write_text(json.dumps(sizes, indent=1) + "\n")

    try:
        _check_size_and_hash(path, archive, check_hash=not downloaded)  # pooch hashed downloads
        return build_folder(final, build_marked, is_complete=_is_complete)
    finally:
        # Unpacked, or refused: either way the download is never trusted again.
        if downloaded:
            path.unlink(missing_ok=True)


def _convert_checkpoint(zip_path, folder):
    """Write a model folder from the archive's one checkpoint, then load it back to check it."""
    from ..model import DeepLocModel
    from ..tf_import import from_tf_checkpoint

    unpacked = folder / "checkpoint"
    _unzip(zip_path, unpacked)
    prefixes = [
        index.with_suffix("")
        for index in sorted(unpacked.rglob("*.index"))
        if any(index.parent.glob(f"{index.stem}.data-*"))
    ]
    if len(prefixes) != 1:
        found = [str(p.relative_to(unpacked)) for p in prefixes]
        raise ValueError(
            "The archive must hold exactly one TensorFlow checkpoint (<prefix>.index with "
            f"<prefix>.data-* shards); found {found or 'none'}."
        )
    from_tf_checkpoint(prefixes[0], folder)
    shutil.rmtree(unpacked)
    DeepLocModel.load(folder)


def fetch_deeploc_model(name="chong", *, data_home=None, url=None, archive=None):
    """The published DeepLoc network as a model folder, downloaded and converted once.

    The first call downloads ``pretrained_DeepLoc.zip`` (Kraus et al. 2017, 19 Chong et al.
    2015 classes), converts it with :func:`~sklearn_deeploc.tf_import.from_tf_checkpoint`
    and keeps the checked folder in the data home; later calls touch no network.

    Parameters
    ----------
    name : {"chong"}, default="chong"
        Which published model.
    data_home : str or path-like, optional
        See :func:`get_data_home`.
    url : str, optional
        A mirror of the published archive.
    archive : str or path-like, optional
        The zip archive downloaded by hand: nothing is downloaded, and the file is left in place.

    Returns
    -------
    pathlib.Path
        The model folder, for :func:`~sklearn_deeploc.load_pretrained` or ``pretrained=``.

    Raises
    ------
    ConnectionError
        When the archive cannot be downloaded; the message says to pass it with ``archive=``.

    See Also
    --------
    fetch_deeploc_datasets : the published training and test sets.

    Examples
    --------
    >>> from sklearn_deeploc import load_pretrained
    >>> from sklearn_deeploc.datasets import fetch_deeploc_model
    >>> clf = load_pretrained(fetch_deeploc_model())  # doctest: +SKIP
    >>> len(clf.classes_)  # doctest: +SKIP
    19
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; available: {sorted(MODELS)}.")
    return _fetch_folder(
        MODELS[name], _convert_checkpoint, data_home=data_home, url=url, local_archive=archive
    )


def _hdf5_files(folder):
    """The HDF5 files under ``folder``, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix in HDF5_SUFFIXES and p.is_file())


def _unpack_datasets(zip_path, folder):
    """Unpack the archive and check that every HDF5 file in it reads as a DeepLoc file."""
    from ._hdf5 import DeepLocHDF5Dataset

    _unzip(zip_path, folder)
    files = _hdf5_files(folder)
    if not files:
        raise ValueError(f"{zip_path} holds no HDF5 file (*.hdf5, *.h5).")
    for path in files:
        DeepLocHDF5Dataset(path)


def fetch_deeploc_datasets(subsets=None, *, data_home=None, url=None, archive=None):
    """The published DeepLoc datasets as HDF5 files, downloaded and unpacked once.

    The first call downloads ``DeepLoc_full_datasets.zip`` (the Chong et al. training,
    validation and test sets and the transfer-learning screens), checks every HDF5 file in
    it and keeps them in the data home; later calls touch no network.

    Parameters
    ----------
    subsets : str or list of str, optional
        Subset names, the file names without ``_set.hdf5`` (``"Chong_train"``); all by default.
    data_home : str or path-like, optional
        See :func:`get_data_home`.
    url : str, optional
        A mirror of the published archive.
    archive : str or path-like, optional
        The zip archive downloaded by hand (left in place).

    Returns
    -------
    dict of str -> pathlib.Path
        Subset name -> HDF5 file, for :func:`load_deeploc_hdf5` or :class:`DeepLocHDF5Dataset`.

    Raises
    ------
    ConnectionError
        When the archive cannot be downloaded (see :func:`fetch_deeploc_model`).

    Examples
    --------
    >>> from sklearn_deeploc.datasets import fetch_deeploc_datasets, load_deeploc_hdf5
    >>> files = fetch_deeploc_datasets(["Chong_train", "Chong_test"])  # doctest: +SKIP
    >>> X, y = load_deeploc_hdf5(files["Chong_test"])  # doctest: +SKIP
    """
    folder = _fetch_folder(
        DATASETS, _unpack_datasets, data_home=data_home, url=url, local_archive=archive
    )
    # Chong_train_set.hdf5 -> Chong_train
    available = {path.stem.removesuffix("_set"): path for path in _hdf5_files(folder)}
    if subsets is None:
        return available
    subsets = [subsets] if isinstance(subsets, str) else list(subsets)
    unknown = [s for s in subsets if s not in available]
    if unknown:
        raise ValueError(f"Unknown subsets {unknown}; available: {sorted(available)}.")
    return {s: available[s] for s in subsets}

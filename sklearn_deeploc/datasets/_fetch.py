"""Fetching the published DeepLoc model and datasets into a local data home.

Each archive is downloaded with pooch (temporary file, retries, progress bar),
unpacked into a hidden temporary folder beside its final place, checked, and
renamed into place only when complete. A later call finds the final folder and
touches no network; the archive itself is deleted once unpacked, and a folder
half-written by an interrupted call is never taken for a finished one.
"""

import os
import secrets
import shutil
import zipfile
import zlib
from collections import namedtuple
from functools import partial
from pathlib import Path

import pooch
import requests

Archive = namedtuple("Archive", ["url", "folder", "size", "sha256"])

# size (bytes) and sha256: unknown until measured on a download of the published
# files; checked whenever they are not None. Until then every archive is checked
# by structure (zip CRCs, then the TF importer or the HDF5 reader on every tensor).
MODELS = {
    "chong": Archive(
        url="http://spidey.ccbr.utoronto.ca/~okraus/pretrained_DeepLoc.zip",
        folder="deeploc-chong",
        size=None,
        sha256=None,
    ),
}
DATASETS = Archive(
    url="http://spidey.ccbr.utoronto.ca/~okraus/DeepLoc_full_datasets.zip",
    folder="DeepLoc_full_datasets",
    size=None,
    sha256=None,
)
DATA_HOME_VARIABLE = "SKLEARN_DEEPLOC_DATA"
DOWNLOAD_RETRIES = 2
HDF5_SUFFIXES = (".hdf5", ".h5")


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
    data_home.mkdir(parents=True, exist_ok=True)
    return data_home


def _known_hash(archive):
    return None if archive.sha256 is None else f"sha256:{archive.sha256}"


def _download(archive, url, data_home):
    """Download ``url`` into ``data_home`` with pooch; a clear error when it cannot."""
    file_name = Path(archive.url).name
    fetcher = pooch.create(
        path=data_home,
        base_url="",
        registry={file_name: _known_hash(archive)},
        urls={file_name: url},
        retry_if_failed=DOWNLOAD_RETRIES,
    )
    try:
        return Path(fetcher.fetch(file_name, progressbar=True))
    except requests.exceptions.RequestException as error:
        raise ConnectionError(
            f"Could not download {url} ({error}). Download it by hand, for example in a "
            f"browser, then pass the file: archive='{file_name}' in Python, or "
            f"'deeploc fetch model|datasets --archive {file_name}' on the command line."
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


def _unzip(path, destination):
    """Extract a zip, checking every member's CRC; a ValueError for a damaged archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(destination)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise ValueError(f"{path} is not a complete zip archive: {error}") from error


def _move_into_place(building, final):
    try:
        os.replace(building, final)
    except OSError:
        if not final.is_dir():  # else another process finished the same folder first
            raise


def _build_folder(final, build):
    """Run ``build(temporary_folder)`` and rename the folder to ``final`` when it succeeds.

    The temporary folder is a hidden sibling of ``final``, so the rename is
    atomic and an interrupted build never leaves a folder named ``final``.
    """
    building = final.parent / f".{final.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    building.mkdir()  # unlike mkdtemp's 0700, follows the umask: a shared data home stays readable
    try:
        build(building)
        _move_into_place(building, final)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final


def _fetch_folder(archive, build, *, data_home, url, local_archive):
    """The finished folder of ``archive`` in the data home, downloaded and built if needed."""
    data_home = get_data_home(data_home)
    final = data_home / archive.folder
    if final.is_dir():
        return final
    downloaded = local_archive is None
    path = _download(archive, url or archive.url, data_home) if downloaded else Path(local_archive)
    if not path.is_file():
        raise FileNotFoundError(f"archive {path} not found.")
    try:
        # pooch has checked the hash of a download already
        _check_size_and_hash(path, archive, check_hash=not downloaded)
        return _build_folder(final, partial(build, path))
    finally:
        # Unpacked, or refused: either way the download is never trusted again.
        if downloaded:
            path.unlink(missing_ok=True)


def _checkpoint_prefix(folder):
    """The one TensorFlow checkpoint (``<prefix>.index`` + data shard) under ``folder``."""
    prefixes = [
        index.with_suffix("")
        for index in sorted(folder.rglob("*.index"))
        if any(index.parent.glob(f"{index.stem}.data-*"))
    ]
    if len(prefixes) != 1:
        found = [str(p.relative_to(folder)) for p in prefixes]
        raise ValueError(
            "The archive must hold exactly one TensorFlow checkpoint (<prefix>.index with "
            f"<prefix>.data-* shards); found {found or 'none'}."
        )
    return prefixes[0]


def _convert_checkpoint(zip_path, folder):
    """Write a model folder from the archive's checkpoint, then load it back to validate it."""
    from ..model import DeepLocModel
    from ..tf_import import from_tf_checkpoint

    unpacked = folder / "checkpoint"
    _unzip(zip_path, unpacked)
    from_tf_checkpoint(_checkpoint_prefix(unpacked), folder)
    shutil.rmtree(unpacked)
    DeepLocModel.load(folder)


def fetch_deeploc_model(name="chong", *, data_home=None, url=None, archive=None):
    """The published DeepLoc network as a model folder, downloaded and converted once.

    The first call downloads ``pretrained_DeepLoc.zip`` (Kraus et al. 2017,
    trained on the Chong et al. 2015 screen, 19 classes), converts its
    TensorFlow checkpoint with :func:`~sklearn_deeploc.tf_import.from_tf_checkpoint`,
    loads the result back to validate it, and keeps the folder in the data
    home. Later calls return that folder without any network access.

    Parameters
    ----------
    name : {"chong"}, default="chong"
        Which published model.
    data_home : str or path-like, optional
        See :func:`get_data_home`.
    url : str, optional
        A mirror of the published archive.
    archive : str or path-like, optional
        The zip archive downloaded by hand: nothing is downloaded, and the
        file is left in place.

    Returns
    -------
    pathlib.Path
        The model folder, for :func:`~sklearn_deeploc.load_pretrained` or
        ``pretrained=``.

    Raises
    ------
    ConnectionError
        When the archive cannot be downloaded; the message says where to get
        it and how to pass it with ``archive=``.
    ValueError
        When the archive is damaged or holds no DeepLoc checkpoint; a
        downloaded archive is then deleted.

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


def _subset_name(path):
    """``Chong_train_set.hdf5`` -> ``Chong_train``."""
    return path.stem.removesuffix("_set")


def _hdf5_files(folder):
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

    The first call downloads ``DeepLoc_full_datasets.zip`` (the Chong et al.
    training, validation and test sets and the transfer-learning screens),
    checks that every HDF5 file in it opens as a DeepLoc file, and keeps them
    in the data home. Later calls touch no network.

    Parameters
    ----------
    subsets : str or list of str, optional
        Subset names, the file names without ``_set.hdf5`` (for example
        ``"Chong_train"``); all of them by default.
    data_home : str or path-like, optional
        See :func:`get_data_home`.
    url : str, optional
        A mirror of the published archive.
    archive : str or path-like, optional
        The zip archive downloaded by hand (left in place).

    Returns
    -------
    dict of str -> pathlib.Path
        Subset name to HDF5 file, ready for :func:`load_deeploc_hdf5` and
        :class:`DeepLocHDF5Dataset`.

    Raises
    ------
    ConnectionError
        When the archive cannot be downloaded (see :func:`fetch_deeploc_model`).
    ValueError
        For an unknown subset (the message lists them), or a damaged archive.

    Examples
    --------
    >>> from sklearn_deeploc.datasets import fetch_deeploc_datasets, load_deeploc_hdf5
    >>> files = fetch_deeploc_datasets(["Chong_train", "Chong_test"])  # doctest: +SKIP
    >>> X, y = load_deeploc_hdf5(files["Chong_test"])  # doctest: +SKIP
    """
    folder = _fetch_folder(
        DATASETS, _unpack_datasets, data_home=data_home, url=url, local_archive=archive
    )
    available = {_subset_name(path): path for path in _hdf5_files(folder)}
    if subsets is None:
        return available
    subsets = [subsets] if isinstance(subsets, str) else list(subsets)
    unknown = [s for s in subsets if s not in available]
    if unknown:
        raise ValueError(f"Unknown subsets {unknown}; available: {sorted(available)}.")
    return {s: available[s] for s in subsets}

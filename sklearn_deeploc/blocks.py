"""Resumable, verified output: long runs keep finished parts and never mix two runs.

A long job (predict or featurize a whole screen, screen its fields) writes its
table in parts, keyed by cell ranges ``(start, stop)`` or by names such as a
field's image. :class:`ResumableOutput` keeps them in ``<output>.parts/``:

``manifest.json``
    What the output depends on: the caller's dict (model digest, every option
    that changes values, the input's :func:`file_identity`), the package
    version and the part keys. A rerun with the same manifest resumes; any
    difference refuses with :class:`OutputMismatchError`, naming what differs.
``journal.jsonl``
    One line per finished part: its file, row count, size and sha256. A part
    is trusted only when its bytes match its line; a truncated, damaged,
    deleted or unrecorded part is computed again.
``lock``
    Held with ``flock`` while a run writes (its pid, host and start time
    inside): a second run refuses with :class:`OutputLockedError`. The system
    drops the lock when its process dies, so a killed run never blocks the
    next one.

Parts are recorded in an append-only journal rather than in the manifest:
rewriting the manifest after each part would cost O(parts) per part (a
genome-wide screen has about 1e5 fields), while a journal line costs O(1), and
a line torn by a crash only leaves its part unrecorded, hence recomputed.
Every file is written under a temporary name, flushed to disk and renamed, so
no reader ever sees half a file.

Jobs build their manifest from what changes values (not from batch size or
device), wrap the work in :class:`ResumableOutput` (or :func:`run_blocks` for
cell ranges), and let a command line print any :class:`ResumableOutputError`
as one line.
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
from collections import Counter
from contextlib import contextmanager
from datetime import datetime
from io import BytesIO
from numbers import Integral
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ._version import __version__

FORMATS = {".csv", ".parquet"}
MANIFEST_FORMAT = 1
FINGERPRINT_SPAN = 1 << 20  # bytes hashed at each end of an input file
START_OVER = "pass overwrite=True (--overwrite on the command line) to start over"


class ResumableOutputError(Exception):
    """Base of the errors a user fixes by rerunning or by starting over."""


class OutputMismatchError(ResumableOutputError, ValueError):
    """The existing output was made from other inputs or options, or cannot be verified."""


class OutputLockedError(ResumableOutputError, RuntimeError):
    """Another running process is writing the same output."""


class DamagedPartError(ResumableOutputError, ValueError):
    """A part changed on disk after this run had verified it."""


def _suffix(path):
    suffix = Path(path).suffix
    if suffix not in FORMATS:
        raise ValueError(f"Output must end in one of {sorted(FORMATS)}; got {path}.")
    return suffix


def _read(source, suffix):
    return pd.read_parquet(source) if suffix == ".parquet" else pd.read_csv(source)


def read_table(path):
    """Read a ``.csv`` or ``.parquet`` table."""
    return _read(path, _suffix(path))


def _replace_atomically(path, write):
    """Call ``write(temporary)``, flush the file to disk, then rename it to ``path``."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_table(frame, path):
    """Write a table atomically (hidden temporary file, flushed, then renamed)."""
    if _suffix(path) == ".parquet":
        return _replace_atomically(path, lambda file: frame.to_parquet(file, index=False))
    return _replace_atomically(path, lambda file: frame.to_csv(file, index=False))


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def file_identity(path):
    """Identify an input file for a manifest without reading all of it.

    Parameters
    ----------
    path : path-like
        A regular file.

    Returns
    -------
    identity : dict
        ``path`` (resolved), ``size``, ``mtime_ns`` and ``fingerprint``: the
        sha256 of the size and of the first and last MiB, so that another file
        (or this one rewritten) is told apart even on a file system whose
        modification times are coarse.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "cells.h5"
    >>> _ = path.write_bytes(b"first version")
    >>> before = file_identity(path)
    >>> sorted(before)
    ['fingerprint', 'mtime_ns', 'path', 'size']
    >>> _ = path.write_bytes(b"other version")
    >>> file_identity(path)["fingerprint"] == before["fingerprint"]
    False
    """
    path = Path(path).resolve()
    with open(path, "rb") as file:
        status = os.fstat(file.fileno())
        digest = hashlib.sha256(str(status.st_size).encode())
        digest.update(file.read(FINGERPRINT_SPAN))
        if status.st_size > FINGERPRINT_SPAN:
            file.seek(max(FINGERPRINT_SPAN, status.st_size - FINGERPRINT_SPAN))
            digest.update(file.read(FINGERPRINT_SPAN))
    return {
        "path": str(path),
        "size": status.st_size,
        "mtime_ns": status.st_mtime_ns,
        "fingerprint": digest.hexdigest(),
    }


def _positive_integer(value, name):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def block_ranges(n_items, block_size):
    """``[(start, stop), ...]`` covering ``range(n_items)`` in blocks of ``block_size``."""
    n_items = _positive_integer(n_items, "n_items")
    block_size = _positive_integer(block_size, "block_size")
    return [(start, min(start + block_size, n_items)) for start in range(0, n_items, block_size)]


def parts_folder(output):
    """Where the parts of ``output`` live: ``<output>.parts/``."""
    output = Path(output)
    return output.with_name(output.name + ".parts")


def _part_key(key):
    """A key as used everywhere: ``(start, stop)`` with ints, or a non-empty string."""
    if isinstance(key, str) and key:
        return key
    if (
        isinstance(key, (tuple, list))
        and len(key) == 2
        and all(isinstance(k, Integral) for k in key)
    ):
        start, stop = int(key[0]), int(key[1])
        if 0 <= start < stop:
            return start, stop
    raise ValueError(f"A part key must be a cell range (start, stop) or a name; got {key!r}.")


def _key_as_json(key):
    return list(key) if isinstance(key, tuple) else key


def _part_name(key, suffix):
    """File name of a part: ``block-<start>-<stop>`` or ``part-<readable name>-<hash>``."""
    if isinstance(key, tuple):
        return f"block-{key[0]:010d}-{key[1]:010d}{suffix}"
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:60]
    return f"part-{readable}-{_sha256(key.encode())[:12]}{suffix}"  # hash: names never collide


def block_path(output, start, stop):
    """File of the block of cells ``start:stop`` of ``output``, in ``output``'s format."""
    return parts_folder(output) / _part_name(_part_key((start, stop)), _suffix(output))


def _as_json(manifest):
    """The manifest as it reads back from JSON (tuples become lists), or a TypeError."""
    if not isinstance(manifest, dict):
        raise TypeError(f"manifest must be a dict; got {type(manifest).__name__}.")
    try:
        return json.loads(json.dumps(manifest, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"manifest values must be JSON values (str, number, list, dict); {error}"
        ) from None


_ABSENT = object()
_HEADER = ("format", "package_version")


def _as_text(value):
    """A manifest value as JSON text, so that 1, 1.0 and true differ."""
    return "<absent>" if value is _ABSENT else json.dumps(value, sort_keys=True)


def _shown(value):
    text = _as_text(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _differences(old, new, prefix=""):
    """``['key: old -> new', ...]`` for each leaf that differs between two JSON dicts."""
    differences = []
    for key in [*new, *(key for key in old if key not in new)]:
        before, after = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if isinstance(before, dict) and isinstance(after, dict):
            differences += _differences(before, after, f"{prefix}{key}.")
        elif _as_text(before) != _as_text(after):
            differences.append(f"{prefix}{key}: {_shown(before)} -> {_shown(after)}")
    return differences


def _manifest_differences(stored, wanted):
    """The caller's entries that differ, then format and version; keys only if nothing else."""
    stored = stored if isinstance(stored, dict) else {}
    depends_on = stored.get("depends_on")
    differences = _differences(
        depends_on if isinstance(depends_on, dict) else {}, wanted["depends_on"]
    )
    differences += _differences(
        {key: stored.get(key, _ABSENT) for key in _HEADER}, {key: wanted[key] for key in _HEADER}
    )
    if not differences and stored.get("keys") != wanted["keys"]:
        differences.append(
            f"keys: {_shown(stored.get('keys', _ABSENT))} -> {_shown(wanted['keys'])}"
        )
    return differences


def _holder_of(descriptor):
    """The process recorded in a lock file, or None when it records none."""
    try:
        holder = json.loads(os.pread(descriptor, 4096, 0))
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def _described(holder):
    if holder is None:
        return "a process that has not recorded itself yet"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"


def _acquire_lock(path, output):
    """Hold an exclusive ``flock`` on ``path``; return its descriptor and the stale holder."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder_of(descriptor)
        os.close(descriptor)
        raise OutputLockedError(
            f"{output} is being written by another run ({_described(holder)}); "
            "wait for it to finish, or stop it, before running again."
        ) from None
    except BaseException:
        os.close(descriptor)
        raise
    # A holder recorded in a file we could lock is a run that died without releasing it.
    stale = _holder_of(descriptor)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(me).encode(), 0)
    return descriptor, stale


def _release_lock(descriptor):
    os.ftruncate(descriptor, 0)  # emptied first: the next run must not think we died
    fcntl.flock(descriptor, fcntl.LOCK_UN)
    os.close(descriptor)


@contextmanager
def held_lock(path, output):
    """Hold the lock file ``path`` while this run writes ``output``.

    Raises :class:`OutputLockedError` at once, naming the other run, when a
    running process holds it; the lock dies with its process.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_deeploc.blocks import held_lock
    >>> folder = tempfile.mkdtemp()
    >>> with held_lock(folder + "/model.lock", folder + "/model"):
    ...     pass
    """
    descriptor, _ = _acquire_lock(path, output)
    try:
        yield
    finally:
        _release_lock(descriptor)


def _journal_records(path):
    """The last record of each part file in a journal; lines that do not parse are skipped."""
    records = {}
    if not path.exists():
        return records
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
            if {"file", "rows", "bytes", "sha256"} <= record.keys():
                records[record["file"]] = record
        except (ValueError, AttributeError, TypeError):  # torn by a crash, or not a record
            continue
    return records


def _call_arguments(key):
    """Arguments a part's key adds to the function: ``start, stop`` or ``name``."""
    return key if isinstance(key, tuple) else (key,)


class ResumableOutput:
    """A table written in parts that survive interruptions and are verified on resume.

    Use it as a context manager: entering takes the lock, checks the manifest
    (or writes it, for a new output) and verifies the parts already on disk;
    leaving releases the lock, however the block ends (an error and
    ``KeyboardInterrupt`` included). Only parts whose bytes match the journal
    count as done.

    Parameters
    ----------
    output : path-like
        The final ``.csv`` or ``.parquet`` table; its parts go to
        ``<output>.parts/``, in the same format.
    manifest : dict
        What the values depend on, as JSON values: the model's digest, every
        option that changes values, each input's :func:`file_identity`. The
        package version and the keys are recorded beside it.
    keys : sequence
        The parts, in output order: cell ranges ``(start, stop)`` (see
        :func:`block_ranges`) or names (str), such as a field's image path.
    unit : str, default="part"
        What a part is called in messages ("block", "field").
    overwrite : bool, default=False
        Remove the previous output and all its parts, and start over.
    verbose : int, default=1
        Print the state found on entering (and a stale lock taken over), and
        a progress bar in :meth:`compute`.

    Attributes
    ----------
    output, parts : Path
        The table and its parts folder.
    keys : list
        The part keys (ranges as ``(start, stop)`` tuples).
    status : str
        The state found on entering, e.g. ``"2 of 3 blocks already done;
        computing 1 (recomputing 1 damaged)"``.

    Raises
    ------
    OutputMismatchError
        On entering, when the manifest differs (the message names each key,
        old and new value), or when what is on disk cannot be verified: a
        parts folder without a manifest (older versions) or an output file
        without a parts folder. ``overwrite=True`` starts over instead.
    OutputLockedError
        On entering, when another running process holds the lock.

    See Also
    --------
    run_blocks : Cell ranges computed by a function, locally or on Dask.

    Examples
    --------
    Named parts, one per field of a screen:

    >>> import tempfile
    >>> import pandas as pd
    >>> out = tempfile.mkdtemp() + "/cells.csv"
    >>> fields = ["plate 1/r01c01f01.tiff", "plate 1/r01c02f01.tiff"]
    >>> manifest = {"model": "0f3a9c", "border": "pad"}
    >>> with ResumableOutput(out, manifest, fields, unit="field") as cells:
    ...     for field in cells.pending():
    ...         cells.write(field, pd.DataFrame({"image": [field], "n_cells": [3]}))
    ...     table = cells.assemble()
    0 of 2 fields already done; computing 2
    >>> table["image"].tolist()
    ['plate 1/r01c01f01.tiff', 'plate 1/r01c02f01.tiff']

    A rerun with the same manifest finds everything done; another refuses:

    >>> with ResumableOutput(out, manifest, fields, unit="field") as cells:
    ...     cells.pending()
    2 of 2 fields already done; computing 0
    []
    >>> try:
    ...     with ResumableOutput(out, {**manifest, "border": "drop"}, fields):
    ...         pass
    ... except OutputMismatchError as error:
    ...     print("refused:", error)
    refused: ...cells.csv was made from other inputs or options (border: "pad" -> "drop"); pass
    overwrite=True (--overwrite on the command line) to start over.
    """

    def __init__(self, output, manifest, keys, *, unit="part", overwrite=False, verbose=1):
        self.output = Path(output)
        self._suffix = _suffix(self.output)
        self.parts = parts_folder(self.output)
        self.keys = [_part_key(key) for key in keys]
        if not self.keys:
            raise ValueError("keys is empty: an output needs at least one part.")
        repeated = [key for key, count in Counter(self.keys).items() if count > 1]
        if repeated:
            raise ValueError(f"keys must be unique; {repeated[0]!r} appears more than once.")
        self._file_names = {key: _part_name(key, self._suffix) for key in self.keys}
        self.manifest = {
            "format": MANIFEST_FORMAT,
            "package_version": __version__,
            "depends_on": _as_json(manifest),
            "keys": [_key_as_json(key) for key in self.keys],
        }
        self.unit, self.overwrite, self.verbose = unit, overwrite, verbose
        self.status = None
        self._records = {}
        self._lock = self._journal = None

    def __enter__(self):
        if self.output.is_dir():
            raise ValueError(f"{self.output} is a folder; expected the path of a table file.")
        if self.output.exists() and not self.parts.exists() and not self.overwrite:
            raise OutputMismatchError(
                f"{self.output} exists but has no {self.parts.name} folder, so it cannot be "
                f"verified; {START_OVER} (this replaces it)."
            )
        self.parts.mkdir(parents=True, exist_ok=True)
        self._lock, stale = _acquire_lock(self.parts / "lock", self.output)
        try:
            if stale is not None:
                self._say(
                    "taking over the lock of an earlier run that ended without releasing it "
                    f"({_described(stale)})"
                )
            self._prepare()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exception):
        self._close()

    def _close(self):
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None
        if self._lock is not None:
            _release_lock(self._lock)
            self._lock = None

    def _say(self, message):
        if self.verbose:
            print(message, flush=True)

    def _prepare(self):
        for leftover in self.parts.glob(".*.tmp"):  # from a killed run: we hold the lock
            leftover.unlink()
        if self.overwrite:
            self._remove_previous()
        self._check_manifest()
        untrusted = self._verify_parts()
        pending = len(self.pending())
        self.status = (
            f"{len(self.keys) - pending} of {len(self.keys)} {self.unit}s already done; "
            f"computing {pending}"
        )
        if untrusted:
            counts = ", ".join(f"{count} {kind}" for kind, count in sorted(untrusted.items()))
            self.status += f" (recomputing {counts})"
        self._say(self.status)

    def _remove_previous(self):
        for entry in self.parts.iterdir():
            if entry.name == "lock":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        self.output.unlink(missing_ok=True)

    def _check_manifest(self):
        path = self.parts / "manifest.json"
        if not path.exists():
            if self.output.exists() or any(p.name != "lock" for p in self.parts.iterdir()):
                raise OutputMismatchError(
                    f"{self.parts} has no manifest.json (written by an older version, or "
                    f"damaged), so {self.output.name} and its parts cannot be verified; "
                    f"{START_OVER}."
                )
            text = json.dumps(self.manifest, indent=1)
            _replace_atomically(path, lambda file: file.write_text(text))
            return
        try:
            stored = json.loads(path.read_text())
        except ValueError as error:
            raise OutputMismatchError(
                f"{path} is damaged ({error}), so the parts cannot be verified; {START_OVER}."
            ) from None
        differences = _manifest_differences(stored, self.manifest)
        if differences:
            raise OutputMismatchError(
                f"{self.output} was made from other inputs or options "
                f"({'; '.join(differences)}); {START_OVER}."
            )

    def _verify_parts(self):
        """Trust the parts whose bytes match the journal; count the others by what is wrong."""
        journal = self.parts / "journal.jsonl"
        records = _journal_records(journal)
        untrusted = Counter()
        for key in self.keys:
            path = self.path(key)
            record = records.get(path.name)
            if record is None:
                if path.exists():
                    untrusted["unrecorded"] += 1
            elif not path.exists():
                untrusted["missing"] += 1
            elif (
                path.stat().st_size == record["bytes"]
                and _sha256(path.read_bytes()) == record["sha256"]
            ):
                self._records[path.name] = record
            else:
                untrusted["damaged"] += 1
        lines = "".join(json.dumps(record) + "\n" for record in self._records.values())
        _replace_atomically(journal, lambda file: file.write_text(lines))  # drops torn lines
        self._journal = os.open(journal, os.O_WRONLY | os.O_APPEND)
        return untrusted

    def _check_open(self):
        if self._lock is None:
            raise RuntimeError("Open the output first: `with ResumableOutput(...) as parts:`.")

    def _file_name(self, key):
        key = _part_key(key)
        if key not in self._file_names:
            raise ValueError(f"{key!r} is not one of the {len(self.keys)} keys of {self.output}.")
        return self._file_names[key]

    def path(self, key):
        """The file of part ``key`` in the parts folder."""
        return self.parts / self._file_name(key)

    def is_done(self, key):
        """Whether part ``key`` is on disk and verified."""
        return self._file_name(key) in self._records

    def pending(self):
        """The keys of the parts still to compute, in output order."""
        return [key for key in self.keys if not self.is_done(key)]

    def write(self, key, frame):
        """Write part ``key`` atomically, then record its rows, size and sha256 in the journal."""
        self._check_open()
        path = self.path(key)
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"Part {key!r} must be a pandas DataFrame; got {type(frame).__name__}.")
        if frame.columns.empty:
            raise ValueError(f"Part {key!r} has no columns; a table part needs at least one.")
        write_table(frame, path)
        data = path.read_bytes()  # hashed as it lies on disk
        record = {
            "key": _key_as_json(_part_key(key)),  # for people reading the journal
            "file": path.name,
            "rows": len(frame),
            "bytes": len(data),
            "sha256": _sha256(data),
        }
        os.write(self._journal, (json.dumps(record) + "\n").encode())
        os.fsync(self._journal)
        self._records[path.name] = record

    def read(self, key):
        """Part ``key`` as a DataFrame, once its bytes and rows match the journal."""
        self._check_open()
        path = self.path(key)
        record = self._records.get(path.name)
        if record is None:
            raise ValueError(f"Part {key!r} of {self.output} is not done yet.")
        data = path.read_bytes() if path.exists() else b""
        if _sha256(data) != record["sha256"]:
            raise DamagedPartError(
                f"{path} changed on disk during this run; run again to compute it again."
            )
        frame = _read(BytesIO(data), self._suffix)
        if len(frame) != record["rows"]:
            # The journal and the part disagree: neither is trusted, the part is computed again.
            path.unlink()
            del self._records[path.name]
            raise DamagedPartError(
                f"{path} reads as {len(frame)} rows; its journal says {record['rows']}. The part "
                "was removed: run again to compute it again."
            )
        return frame

    def assemble(self):
        """Concatenate the verified parts, in key order, into ``output`` (atomically).

        Returns
        -------
        table : DataFrame
            The whole output, as written.
        """
        self._check_open()
        pending = self.pending()
        if pending:
            raise ValueError(
                f"{len(pending)} of {len(self.keys)} {self.unit}s of {self.output} are not done "
                f"(the first: {pending[0]!r}); write them before assembling."
            )
        table = pd.concat([self.read(key) for key in self.keys], ignore_index=True)
        write_table(table, self.output)
        return table

    def compute(self, function, *args, client=None):
        """Compute and write every pending part; return how many were computed.

        Parameters
        ----------
        function : callable
            ``function(*args, start, stop)`` for a cell range,
            ``function(*args, name)`` for a named part; returns the part's
            DataFrame. With a ``client`` it runs on the Dask workers, so it
            must be importable there.
        *args
            Leading arguments of ``function`` (Dask futures are resolved on
            the workers).
        client : distributed.Client, optional
            Compute the parts on a Dask cluster; each is written here as soon
            as it arrives, and the rest is cancelled if this run stops.
        """
        pending = self.pending()
        with tqdm(total=len(pending), disable=not self.verbose, unit=self.unit) as progress:
            if client is None:
                for key in pending:
                    self.write(key, function(*args, *_call_arguments(key)))
                    progress.update()
            else:
                self._compute_on(client, pending, function, args, progress)
        return len(pending)

    def _compute_on(self, client, pending, function, args, progress):
        from distributed import as_completed

        futures = {
            client.submit(function, *args, *_call_arguments(key), pure=False): key
            for key in pending
        }
        try:
            for future in as_completed(futures):
                self.write(futures[future], future.result())
                progress.update()
        finally:
            client.cancel(list(futures))  # a stopped run leaves no work behind on the cluster


def run_blocks(
    output,
    n_items,
    block_size,
    function,
    *args,
    manifest=None,
    overwrite=False,
    client=None,
    verbose=1,
):
    """Compute the missing blocks of cells with ``function(*args, start, stop)``, then assemble.

    A :class:`ResumableOutput` over :func:`block_ranges`: a rerun with the same
    manifest computes only the blocks that are missing or fail verification;
    one with another manifest refuses.

    Parameters
    ----------
    output : path-like
        Final ``.csv`` or ``.parquet`` table.
    n_items : int
        Number of cells.
    block_size : int
        Cells per block (the last block may be shorter).
    function : callable
        Returns the rows of cells ``start:stop`` as a DataFrame; with a
        ``client`` it runs on the Dask workers, so it must be importable there.
    *args
        Leading arguments of ``function`` (Dask futures are resolved on the workers).
    manifest : dict, optional
        What the values depend on (see :class:`ResumableOutput`); ``n_items``
        and ``block_size`` are added to it.
    overwrite : bool, default=False
        Remove the previous output and its blocks, and start over.
    client : distributed.Client, optional
        Compute blocks on a Dask cluster; each finished block is written here
        as soon as it arrives.
    verbose : int, default=1

    Returns
    -------
    n_computed : int
        Blocks computed in this run (the others were already on disk and verified).

    Raises
    ------
    OutputMismatchError, OutputLockedError
        See :class:`ResumableOutput`.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_deeploc.blocks import run_blocks, read_table
    >>> import tempfile
    >>> out = tempfile.mkdtemp() + "/numbers.csv"
    >>> rows = lambda a, b: pd.DataFrame({"x": range(a, b)})
    >>> run_blocks(out, 5, 2, rows, verbose=0), run_blocks(out, 5, 2, rows, verbose=0)
    (3, 0)
    >>> read_table(out)["x"].tolist()
    [0, 1, 2, 3, 4]
    """
    keys = block_ranges(n_items, block_size)
    manifest = _as_json({} if manifest is None else manifest)
    manifest.update(n_items=int(n_items), block_size=int(block_size))
    with ResumableOutput(
        output, manifest, keys, unit="block", overwrite=overwrite, verbose=verbose
    ) as blocks:
        n_computed = blocks.compute(function, *args, client=client)
        blocks.assemble()
    return n_computed

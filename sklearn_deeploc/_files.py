"""File mechanics: atomic writes, folder swaps, safetensors permissions, digests and locks.

A file or folder is built under a hidden name beside its final place, flushed and renamed,
so no reader ever sees half of it. It imports nothing from the package: every module may use it.
"""

import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

FINGERPRINT_SPAN = 1 << 20  # bytes hashed at each end of an input file
HOLDER_SUFFIX = ".holder"  # beside a lock file: filelock owns the lock file itself
_ABSENT = object()
_REENTERED = set()  # (lock file, thread) of the reentrant locks this process holds


def _fsync(path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(path, write, *, suffix=".tmp"):
    """Call ``write(temporary)`` on a hidden sibling, flush it to disk, rename it to ``path``."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")
    try:
        write(temporary)
        _fsync(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def replace_folder(path, write, *, keep_others=False):
    """Make ``path`` the folder ``write`` fills in a sibling; ``keep_others`` links old entries."""
    target = Path(path).resolve()  # a symbolic link to the folder stays a link
    if target.exists() and Path.cwd().is_relative_to(target):
        raise ValueError(
            f"Cannot replace the folder {path}: it holds the current working directory. "
            "Write into a folder of its own."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.saving-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)  # left by a killed save
    staging.mkdir()
    try:
        write(staging)
        for file in staging.iterdir():
            if file.is_file():
                _fsync(file)
        if target.exists():
            shutil.copymode(target, staging)
            if keep_others:
                _link_other_entries(target, staging)
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Path(path)


def _link_other_entries(old, new):
    for entry in old.iterdir():
        if os.path.lexists(new / entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, new / entry.name)


def _link_or_copy(source, destination):
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError:  # a file system without hard links, or a file of another user
        shutil.copy2(source, destination, follow_symlinks=False)


def _swap_in(staging, target):
    """Rename ``staging`` to ``target``; an old ``target`` is deleted only once replaced."""
    if not target.exists():
        os.rename(staging, target)
        return
    replaced = target.with_name(f".{target.name}.replaced-{os.getpid()}")
    shutil.rmtree(replaced, ignore_errors=True)
    os.rename(target, replaced)
    try:
        os.rename(staging, target)
    except BaseException:  # Ctrl-C or an OS error between the renames: the old one goes back
        os.rename(replaced, target)
        raise
    shutil.rmtree(replaced)


def build_folder(final, build, *, is_complete):
    """Run ``build`` in a sibling renamed to ``final``, unless another process completed it."""
    final = Path(final)
    building = final.with_name(f".{final.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    building.mkdir()  # unlike mkdtemp's 0700, follows the umask: a shared folder stays readable
    try:
        build(building)
        _move_into_place(building, final, is_complete)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final


def _move_into_place(building, final, is_complete):
    """Rename ``building`` to ``final``, once replacing an incomplete ``final``."""
    for retry in (False, True):
        try:
            os.replace(building, final)
            return
        except OSError:
            if is_complete(final):  # another process finished the same folder first
                return
            if retry or not os.path.lexists(final):
                raise
        _discard(final)


def _discard(path):
    """Move ``path`` aside (atomic) and delete it: a file, a link or a folder."""
    aside = path.with_name(f".{path.name}.discarded-{secrets.token_hex(4)}")
    os.replace(path, aside)
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink()


def save_safetensors(tensors, path, *, like, metadata=None):
    """Save ``tensors`` with safetensors, with the permissions of the file ``like``."""
    from safetensors.torch import save_file  # torch only when saving: the CLI starts without

    save_file(tensors, str(path), metadata=metadata)
    # safetensors makes 0600 files whatever the umask; ``like`` was made by open(), as a lab
    # sharing the folder expects.
    os.chmod(path, stat.S_IMODE(Path(like).stat().st_mode))


def file_identity(path):
    """Identify an input file without reading it all: the fingerprint outlives coarse mtimes."""
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


def stat_digest(paths):
    """Digest of the absolute paths, sizes and modification times of files: cheaper than
    :func:`file_identity`."""
    stats = [(os.path.abspath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths]
    return hashlib.sha256(repr(sorted(stats)).encode()).hexdigest()


def tree_files(folder):
    """Every file under ``folder``, through symbolic links, each folder once."""
    seen = set()
    for root, folders, names in os.walk(folder, followlinks=True):
        status = os.stat(root)
        if (status.st_dev, status.st_ino) in seen:  # a link back up: a cycle
            folders[:] = []
            continue
        seen.add((status.st_dev, status.st_ino))
        yield from (Path(root) / name for name in names)


def sha256_hex(data):
    """The sha256 of ``data`` (bytes) as hex."""
    return hashlib.sha256(data).hexdigest()


def array_digest(array, *, length=16):
    """The sha256 of an array's bytes (C order), as ``length`` hex digits."""
    return hashlib.sha256(np.ascontiguousarray(array).data.cast("B")).hexdigest()[:length]


def tensor_digest(state, *, prefix=b"", length=None):
    """The sha256 of ``prefix`` and of a state dict's names and tensors, in name order, as hex."""
    digest = hashlib.sha256(prefix)
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:length]


def _as_text(value):
    """A JSON value as text, so that 1, 1.0 and true differ."""
    return "<absent>" if value is _ABSENT else json.dumps(value, sort_keys=True)


def shown(value):
    """A JSON value as text of at most 60 characters, for messages."""
    text = _as_text(value)
    return text if len(text) <= 60 else text[:57] + "..."


def differences(old, new, prefix=""):
    """``['key: old -> new', ...]`` for each leaf that differs between two JSON dicts."""
    found = []
    for key in [*new, *(key for key in old if key not in new)]:
        before, after = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if isinstance(before, dict) and isinstance(after, dict):
            found += differences(before, after, f"{prefix}{key}.")
        elif _as_text(before) != _as_text(after):
            found.append(f"{prefix}{key}: {shown(before)} -> {shown(after)}")
    return found


def _holder(path):
    """How the holder file ``path`` describes its process."""
    try:
        holder = json.loads(path.read_text())
        return f"pid {holder['pid']} on host {holder['host']}, started {holder['started']}"
    except (OSError, ValueError, TypeError, KeyError):
        return None


@contextmanager
def held_lock(path, what, *, error=RuntimeError, reentrant=False):
    """Hold the lock file ``path`` while writing ``what``; yield a dead holder's record or None."""
    path = Path(path)
    key = (path.resolve(), threading.get_ident())
    if reentrant and key in _REENTERED:  # this thread holds it already
        yield None
        return
    holder = path.with_name(path.name + HOLDER_SUFFIX)
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        described = _holder(holder) or "a process that has not recorded itself yet"
        raise error(
            f"{what} is being written by another run ({described}); "
            "wait for it to finish, or stop it, before running again."
        ) from None
    try:
        stale = _holder(holder)  # left by a run that died holding the lock
        started = datetime.now().astimezone().isoformat(timespec="seconds")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
        # One small write, read whole: a temporary file would show the pid before this one does.
        holder.write_text(json.dumps(me))
        if reentrant:
            _REENTERED.add(key)
        yield stale
    finally:
        _REENTERED.discard(key)
        # While held: after the release, a run taking the lock in between would hold a file
        # that a third run no longer sees.
        holder.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        lock.release()

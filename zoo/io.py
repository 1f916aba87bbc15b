"""Atomic file writes and sha256: a write killed midway never leaves a half-written file in place."""
from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A symbolic link is followed: the file it points to is replaced and the link stays. A replaced file keeps its
    permission bits (not setuid/setgid/sticky); being a new file owned by the writer, it is no longer a hard link of the file it replaces (the other names keep
    the old content). Raises ValueError, before anything is written, when ``path`` exists and is not a regular
    file (a folder, a FIFO, a device such as /dev/null), which a rename would replace, or a link on the way is
    dangling or a loop (`check_link_path`)."""
    path = Path(path)
    check_link_path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a FIFO, socket or device)"
        raise ValueError(f"{path} is {kind}; files are written only to regular files or new paths")
    # an existing file keeps its permissions; a new one gets the usual ones (mkstemp makes 0600 files)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()  # (not setuid/setgid bits)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_link_path(path: str | os.PathLike) -> None:
    """Raises ValueError when ``path`` is a loop of symbolic links, or a folder above it is a link that is
    dangling or a loop (a write there would fail late with a bare FileExistsError). ``path`` itself may be a
    dangling link: a write makes the file it points to."""
    path = Path(path)
    if path.is_symlink():
        try:
            os.stat(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ValueError(f"{path} is a loop of symbolic links; nothing was written") from None
    folder = broken_link(path.parents)
    if folder is not None:
        raise ValueError(f"{path}: {folder} is a symbolic link to {os.readlink(folder)}, which does not resolve "
                         "to a folder (missing, or a loop of links); nothing was written")


def broken_link(paths: Iterable[Path]) -> Path | None:
    """The first of ``paths`` that is a symbolic link resolving to nothing (dangling, or a loop), else None."""
    return next((p for p in paths if p.is_symlink() and not p.exists()), None)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_output_folder(flag: str, path: str | os.PathLike) -> None:
    """Raises ``ValueError`` unless ``path`` (given as ``flag``, named in the error) is a folder that exists or
    can be made, and can be written: checked before any work, so that nothing runs for output that could not
    be kept; a symbolic link on the way that is dangling or a loop is named. Creates nothing."""
    target = Path(path)
    link = broken_link((target, *target.parents))  # dangling, or a loop: a mkdir would fail late
    if link is not None:
        raise ValueError(f"{flag} {target}: {link} is a symbolic link to {os.readlink(link)}, which does not "
                         "resolve to a folder (missing, or a loop of links)")
    if target.exists() and not target.is_dir():
        raise ValueError(f"{flag} {target} is a file, not a folder")
    existing = next(p for p in (target, *target.resolve().parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{flag} {target}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {target}: {existing} cannot be written; choose another folder")


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder data sets are read from and derived data cached in: ``root`` when given, else ``$KDZOO_DATA``,
    else ``~/.cache/kdzoo/data``; a leading ``~`` is expanded in each, and an empty or blank value counts as not
    given. Creates nothing."""
    if root is not None and str(root).strip():
        return Path(root).expanduser()
    env = os.environ.get("KDZOO_DATA", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kdzoo" / "data"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

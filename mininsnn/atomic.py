"""Atomic file writes: the one place that writes a file so that a crash leaves the old or the new.

Every file mininsnn writes for a user (checkpoints, run records, model files, exported C, NIR
graphs, plots, data-set caches and downloads) goes through :func:`atomic_file`:

1. a temporary file in the destination's folder (``.NAME.XXXXXXXX.tmp``, so it is on the same file
   system and never looks like the real file);
2. the caller writes it;
3. its data is fsync'ed, it gets the permissions a new file gets under the umask (``mkstemp``
   makes 0600), and ``os.replace`` renames it over the destination in one step;
4. the folder is fsync'ed, so the rename itself survives a power cut.

An exception at any point (including KeyboardInterrupt) removes the temporary file and leaves the
destination as it was. A kill -9 can leave the temporary file behind; ``runs.RunFolder`` removes
those of a run folder when the run starts or resumes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["atomic_file", "write_bytes", "write_text", "umask"]


def umask() -> int:
    """The process's umask (reading it means setting it: set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:               # some file systems do not open folders: the rename still holds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path, suffix: str = ".tmp", temp=None):
    """``with atomic_file(path) as tmp:`` write the file ``tmp`` (a str path); on leaving the block
    it replaces ``path`` in one step (module docstring). ``temp`` names the temporary file
    yourself (it must lie in ``path``'s folder); by default ``mkstemp`` picks a fresh name."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if temp is None:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix,
                                   dir=folder)
        os.close(fd)
    else:
        tmp = os.fspath(temp)
    try:
        yield tmp
        with open(tmp, "rb") as fh:                     # data on disk before the rename
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(folder)


def write_bytes(path, data: bytes, temp=None) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_file(path, temp=temp) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path, text: str, encoding: str = "utf-8", temp=None) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path, temp=temp) as tmp:
        with open(tmp, "w", encoding=encoding) as f:
            f.write(text)

"""Durable, atomic file writes: the one way dedup replaces a file a reader may be looking at.

Every file dedup writes into a store or for a user (the index and its sidecar, uploaded images,
``reports/*.json``, ``report -o``, evaluation outputs) goes through :func:`atomic_write`:

1. the bytes go to a temporary file *in the same folder* (``.<name>.tmp-<pid>-<random>``), created
   with ``O_EXCL`` and mode ``0o666`` filtered by the process umask, like any file a program opens
   (``0644`` under the usual umask ``022``; run with umask ``077`` to keep a store private);
2. the temporary file is fsynced, so a power cut cannot leave a renamed but empty file;
3. it is renamed over the target with :func:`os.replace` (atomic on POSIX: a reader sees the whole old
   file or the whole new one), and the folder is fsynced so the rename itself is durable.

On any failure, Ctrl-C included, the temporary file is removed and the old file is left as it was.
A process killed outright (``kill -9``) can leave a temporary file behind; :func:`sweep_temporaries`
removes those of dead processes, and stores call it when they open.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: How temporary files are named: ``.<target name>.tmp-<pid>-<random>``.
TMP_INFIX = ".tmp-"


def temporary_path(path: Path) -> Path:
    """A fresh temporary name beside ``path`` that names this process (see :func:`sweep_temporaries`)."""
    return path.with_name(f".{path.name}{TMP_INFIX}{os.getpid()}-{secrets.token_hex(4)}")


def stage(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Write a temporary file beside ``path`` with ``write(tmp)`` and fsync it; returns it, not yet in place.

    ``write`` receives the temporary file's path, which already exists (empty, with the final mode); it may
    open it or hand it to a library that writes files (FAISS, numpy). On any failure the temporary file is
    removed and the error propagates. :func:`publish` moves it into place.
    """
    tmp = temporary_path(Path(path))
    # O_EXCL: never follow a link or reuse a file someone planted under the temporary name.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def publish(staged: Path, path: str | os.PathLike[str]) -> None:
    """Rename a file made by :func:`stage` over ``path`` (atomic) and make the rename durable."""
    target = Path(path)
    os.replace(staged, target)
    fsync_dir(target.parent)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Replace ``path`` by what ``write(tmp)`` writes, atomically and durably: :func:`stage`, then :func:`publish`.

    OSError propagates; the temporary file never outlives a failure and the old file stays as it was.
    """
    staged = stage(path, write)
    try:
        publish(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make renames in ``folder`` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # the rename happened; only its durability is unknown
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (and /proc-like mounts) refuse fsync on folders
    finally:
        os.close(fd)


def stale_temporaries(folder: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """Temporary files in ``folder`` whose writers are no longer running, each with the file it was meant to
    replace: ``(temporary, target)``. A temporary file names its writer's pid; one whose writer is alive is
    being written and is not listed."""
    found: list[tuple[Path, Path]] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return found
    for entry in entries:
        parsed = _parse_temporary(entry.name)
        if parsed is None or process_alive(parsed[1]) or not entry.is_file(follow_symlinks=False):
            continue
        found.append((Path(entry.path), Path(entry.path).with_name(parsed[0])))
    return found


def sweep_temporaries(folder: str | os.PathLike[str], target: str | None = None) -> list[Path]:
    """Remove the :func:`stale_temporaries` of ``folder`` (interrupted writes), or only those meant to replace
    the file named ``target``; returns them."""
    removed: list[Path] = []
    for tmp, meant_for in stale_temporaries(folder):
        if target is not None and meant_for.name != target:
            continue
        try:
            tmp.unlink()
        except OSError as exc:
            log.warning("cannot remove the stale temporary file %s: %s", tmp, exc.strerror or exc)
            continue
        removed.append(tmp)
    if removed:
        log.info("removed %d temporary file(s) left by interrupted writes in %s", len(removed), folder)
    return removed


def _parse_temporary(name: str) -> tuple[str, int] | None:
    """``(target name, writer pid)`` of a :func:`temporary_path` name, else None."""
    if not name.startswith(".") or TMP_INFIX not in name:
        return None
    target, tail = name[1:].rsplit(TMP_INFIX, 1)
    pid = tail.split("-", 1)[0]
    if not target or not (pid.isascii() and pid.isdigit()):
        return None
    return target, int(pid)


def process_alive(pid: int) -> bool:
    """Whether a process with ``pid`` runs on this host (one of another user counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True

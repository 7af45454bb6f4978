"""Crash-safe file writes: a reader sees the old file or the complete new one, never a torn one.

Every write goes to a temporary file in the destination's directory (same file system, so
the final rename is atomic), is flushed and fsync'ed, then ``os.replace``'d over the target;
the directory is fsync'ed too so the rename itself survives a power loss.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator


def fsync_dir(directory: "str | Path") -> None:
    """Persist a directory entry change (rename/create); a no-op where unsupported."""
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask(0) would
    briefly loosen it for every other thread)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_path(path: Path) -> Path:
    """A fresh temp name beside ``path`` that keeps its suffix (some writers check it).

    mkstemp creates 0600 files; the result gets the permissions a plain ``open`` would have
    given (0666 minus the umask), so checkpoints and reports stay readable by others."""
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(name)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on a clean exit fsync it and rename it over ``path``,
    on any error remove it and leave ``path`` untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_with(path: "str | Path", write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_path)`` (any writer that takes a path), then move it onto ``path``.

    If ``write`` raises, the temp file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    with _replacing(path) as tmp:
        write(tmp)
    return path


@contextlib.contextmanager
def atomic_open(path: "str | Path", mode: str = "wb") -> Iterator[IO]:
    """``with atomic_open(p) as fh: fh.write(...)`` -- the file appears only when the block ends."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    with _replacing(Path(path)) as tmp, open(tmp, mode) as fh:
        yield fh


def atomic_write_bytes(path: "str | Path", data: bytes) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: "str | Path", text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_dir(path: "str | Path", fill: Callable[[Path], None]) -> Path:
    """Build a whole directory with ``fill(tmp_dir)`` and rename it to ``path`` at once.

    Used for multi-file checkpoints: the directory either exists complete or not at all.
    An existing ``path`` is replaced (moved aside first, deleted after the swap).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 directories
        fill(tmp)
        for child in tmp.iterdir():
            if child.is_file():
                with open(child, "rb") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


def remove_stale_temps(directory: "str | Path") -> int:
    """Delete leftovers of interrupted atomic writes (``.NAME.tmp-*``); returns how many."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    removed = 0
    for child in directory.iterdir():
        if child.name.startswith(".") and (".tmp-" in child.name or ".old-" in child.name):
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    child.unlink()
            removed += 1
    return removed

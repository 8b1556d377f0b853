"""Atomic writes: a kill at any instant leaves either the old file/folder or the new one, never half.

Everything is written beside its destination under a temporary name, flushed to disk, then renamed
into place (rename is atomic within one filesystem). The temporary file or folder is given the mode a plain
`open`/`mkdir` would give under the process's umask (mkstemp makes 0600, mkdtemp 0700), so teammates
can read a study's results where the umask lets them.

A write that finds the disk or the quota full (ENOSPC, EDQUOT) raises `DiskFull`, one line naming
the file and the space left; what was there before is untouched.

JSON-lines records (a study's submissions, gates and retries; a run's metrics and preemptions) are
appended in one write each under a POSIX lock (`append_jsonl`, safe on NFS) and read back whole, a last line cut short by a kill
ignored (`read_jsonl`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator


FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
    """A write found no space (or no quota) left; older files are whole."""

    def __init__(self, dest: Path, cause: OSError):
        super().__init__(cause.errno, f"no space left to write {dest} ({os.strerror(cause.errno)}; "
                                      f"{_free(dest.parent)} free there): free some space or move runs_root, then run it again")
        self.dest = dest

    def __str__(self) -> str:
        return self.strerror


def _free(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def _named_when_full(dest: Path) -> Iterator[None]:
    try:
        yield
    except DiskFull:
        raise
    except OSError as e:
        if e.errno in FULL:
            raise DiskFull(dest, e) from e
        raise


def _umask() -> int:
    """The process's umask. Linux reports it in /proc; elsewhere os.umask must set it to read it,
    which races other threads creating files, so that is only the fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside `dest`; on success it is fsynced and renamed onto `dest`.

    On an exception the temporary file is removed and `dest` is untouched.
    """
    dest = Path(dest)
    with _named_when_full(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp_path, dest)
            _fsync_dir(dest.parent)
        finally:
            tmp_path.unlink(missing_ok=True)


def write_text(dest: str | os.PathLike, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def create_once(dest: str | os.PathLike, text: str) -> bool:
    """Write `text` to `dest` whole unless `dest` exists; False if it did (the first writer's stays).

    The file is written beside `dest` and hard-linked into place: the link fails if another writer
    got there first, so readers only ever see one complete version.
    """
    dest = Path(dest)
    with _named_when_full(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fchmod(f.fileno(), 0o666 & ~_umask())
                os.fsync(f.fileno())
            os.link(tmp, dest)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        _fsync_dir(dest.parent)
    return True


def point(link: str | os.PathLike, target: str | os.PathLike) -> None:
    """Make `link` a symlink to `target` (relative, so the tree can move), swapped in by one rename: a reader
    follows the old link or the new one, never none."""
    link = Path(link)
    tmp = link.parent / f".{link.name}.{socket.gethostname()}.{os.getpid()}.link"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, link.parent), tmp)
    try:
        os.replace(tmp, link)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(link.parent)


def write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def _settle(folder: Path) -> None:
    """fsync every file under `folder` and give each file and folder the umask's mode: libraries
    writing into it may not (safetensors writes 0600), and a teammate could not read the result."""
    mask = _umask()
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
            p.chmod((0o777 if p.stat().st_mode & 0o100 else 0o666) & ~mask)
        elif p.is_dir():
            p.chmod(0o777 & ~mask)


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `dest`; on success it replaces `dest` whole.

    If `dest` already exists it is moved aside first and deleted only after the new folder is in
    place, so a kill leaves either the old folder, the new one, or the old one under a `.old` name
    beside a complete new one.
    """
    dest = Path(dest)
    with _named_when_full(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            tmp.chmod(0o777 & ~_umask())
            yield tmp
            _settle(tmp)
            old = None
            if dest.exists():
                old = dest.with_name(f".{dest.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(dest, old)
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def one_at_a_time(lock: Path) -> Iterator[None]:
    """Builders of one shared artefact (a cache folder two jobs may build at once) take turns: an exclusive
    flock on `lock`, released with the process. Where the filesystem has no flock, each goes on alone:
    a second build is wasted work, and atomic_dir still leaves one whole folder."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        with contextlib.suppress(OSError):
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def append_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """Append `rows` as JSON lines in one write, fsynced, under a POSIX lock on the file: a journal that
    writers on several nodes share. NFS only emulates O_APPEND (each client writes at the end it last saw),
    so the lock is what orders them: taking it makes the client revalidate the file's size, and the
    unlock comes after the fsync.

    A line an earlier writer left cut short (killed mid-write) is ended first, so it cannot swallow
    the next; readers skip it (read_jsonl).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _named_when_full(path), open(path, "a+b") as f, _locked(f):
        end = f.seek(0, os.SEEK_END)
        torn = end > 0 and f.seek(end - 1) >= 0 and f.read(1) != b"\n"
        f.write((("\n" if torn else "") + "".join(json.dumps(r) + "\n" for r in rows)).encode())
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _locked(f) -> Iterator[None]:
    """An exclusive POSIX (fcntl) lock on open file `f`, which NFS carries to the server; where the filesystem
    has no locks (ENOLCK), unlocked as before."""
    try:
        fcntl.lockf(f, fcntl.LOCK_EX)
    except OSError as e:
        if e.errno != errno.ENOLCK:
            raise
    yield  # closing the file releases the lock


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a last line cut short by a kill is ignored."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows

"""Run folders behind a URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``): staging and sync.

``rts search --storage URI`` keeps the run folder ``<URI>/<name>/`` on any file system pyarrow
understands. The driver writes its own files (config, tables, summary, Optuna journal, stage-2
checkpoints) into a local *staging* copy, ``$RTS_STAGING_DIR/<sanitised URI>/<name>``
(default ``~/.cache/rts/staging``), and mirrors them:

* :func:`sync_down` at the start: the remote files replace the staging copy, so a rerun on
  another machine resumes where the last one stopped (a staging copy whose remote is gone is
  cleared: the remote is the truth);
* :func:`sync_up` after each stage, at the end and when the search stops on an error: the files
  that changed are uploaded one by one, data before the tables that reference it (checkpoints
  before ``trials.parquet``, a stage's history before its ``stage<n>_trials.parquet``, which marks
  it finished), each atomically (object stores write whole objects; ``file://`` and HDFS get a
  temporary name and a rename), so the remote is always a consistent snapshot.

Ray Tune's experiments (``ray/stage<n>``) are given the URI itself: Ray syncs their state up and
the trials write their checkpoints straight to it (so a cluster needs no shared folder).

The Optuna journal (stage 1's study) must match Ray's snapshot of the searcher when a stage is
restored, wherever that snapshot is restored. The searcher therefore saves the journal's content
with its state (:meth:`rts.search.engine.searcher.StudySearcher.save`) and puts it back into the
staging copy of the machine that restores (:func:`journal_at`, :func:`restore_journal`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from rts.tasks.io import atomic_path, atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

SCHEMES = ("abfs", "abfss", "file", "gcs", "gs", "hdfs", "s3", "viewfs")
"""URI schemes pyarrow's file-system layer opens (``pyarrow.fs.FileSystem.from_uri``)."""

STAGING_ENV = "RTS_STAGING_DIR"
"""Environment variable that moves the staging folders (default ``~/.cache/rts/staging``)."""

MANIFEST = ".rts-sync.json"
"""Staging file: size and mtime of every file as last uploaded or downloaded (skip unchanged)."""

REMOTE_ONLY = ("ray",)
"""Folders of a run (or of a study in it) that live on the remote only (Ray Tune syncs them)."""

OBJECT_STORES = ("s3", "gcs")
"""pyarrow file-system types whose writes are whole objects: uploaded without a rename."""

UPLOAD_ORDER = (
    "config.yaml",
    "optuna.journal",
    "",  # everything else (checkpoints): the data the tables reference
    "stages/stage1_history.parquet",
    "stages/stage1_attacks.parquet",
    "stages/stage1_images.parquet",
    "stages/stage1_trials.parquet",
    "stages/stage2_history.parquet",
    "stages/stage2_attacks.parquet",
    "stages/stage2_images.parquet",
    "stages/stage2_trials.parquet",
    "history.parquet",
    "attacks.parquet",
    "images.parquet",
    "trials.parquet",
    "summary.json",
    "summary.md",
)
"""The order of an upload: a table goes up after what it references, ``stage<n>_trials``
(a finished stage's marker) after its history and attacks, the summary last."""


# --------------------------------------------------------------------------------------------
# URIs and staging


def is_uri(storage: str | os.PathLike[str]) -> bool:
    """Whether ``--storage`` names a URI (``scheme://...``) rather than a folder."""
    return "://" in os.fspath(storage)


def check_uri(uri: str) -> str:
    """``uri`` without a trailing slash, after checking it can name a run folder.

    Raises:
        ValueError: an unknown scheme, a ``file://`` URI without an absolute path, or a bucket /
            host missing.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"--storage {uri!r}: unsupported URI scheme {parts.scheme!r}; choose from "
            f"{', '.join(s + '://' for s in SCHEMES)} or a folder"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"--storage {uri!r}: a URI with ?query or #fragment is not supported")
    if scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path):
        raise ValueError(
            f"--storage {uri!r}: a file:// URI needs an absolute path, as file:///abs/path"
        )
    if scheme != "file" and not parts.netloc:
        raise ValueError(f"--storage {uri!r}: the URI names no bucket or host")
    return uri.rstrip("/")


def staging_root() -> Path:
    """Where staging copies live: ``$RTS_STAGING_DIR`` or ``~/.cache/rts/staging``."""
    env = os.environ.get(STAGING_ENV)
    base = Path(env) if env else Path("~/.cache/rts/staging")
    return base.expanduser().resolve()


def staging_dir(uri: str, name: str) -> Path:
    """The local staging copy of ``<uri>/<name>``: a readable, collision-free folder name."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", uri).strip("_")[:80]
    digest = hashlib.sha256(uri.encode()).hexdigest()[:10]
    return staging_root() / f"{readable}-{digest}" / name


def filesystem(uri: str) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path on it)`` of ``uri``; a failure is one-line ``ValueError``."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"--storage {uri!r}: cannot open it: {message}") from exc
    return fs, path.rstrip("/")


def delete_tree(location: str | os.PathLike[str]) -> bool:
    """Remove a folder (a local path or a URI) and everything in it; whether it existed."""
    text = os.fspath(location)
    if not is_uri(text):
        if not os.path.exists(text):
            return False
        shutil.rmtree(text)
        return True
    import pyarrow.fs as pafs

    fs, path = filesystem(text)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return False
    fs.delete_dir(path)
    return True


# --------------------------------------------------------------------------------------------
# Sync


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _read_manifest(local: Path) -> dict[str, list[int]]:
    try:
        return json.loads((local / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def _skipped(rel: str) -> bool:
    """Transient files (temporary ``.*`` names, lock files) and Ray's remote-only folder, of
    the run or of a study inside it (a run of several main tasks)."""
    parts = PurePosixPath(rel).parts
    return (
        any(p in REMOTE_ONLY for p in parts[:2])
        or any(p.startswith(".") for p in parts)
        or rel.endswith(".lock")
    )


def upload_rank(rel: str) -> int:
    """Position of ``rel`` in an upload (:data:`UPLOAD_ORDER`; unknown files with the data)."""
    return UPLOAD_ORDER.index(rel) if rel in UPLOAD_ORDER else UPLOAD_ORDER.index("")


def _put(src: Path, fs: Any, dest: str) -> None:
    """Upload one file; atomic on the remote (see the module docstring)."""
    import pyarrow.fs as pafs

    parent = posix_parent(dest)
    fs.create_dir(parent, recursive=True)
    kwargs: dict[str, Any] = {"chunk_size": 64 * 1024 * 1024, "use_threads": False}
    local = pafs.LocalFileSystem()
    if fs.type_name in OBJECT_STORES:
        pafs.copy_files(str(src), dest, local, fs, **kwargs)
        return
    tmp = f"{parent}/.{posix_name(dest)}.{os.getpid()}.upload"
    try:
        pafs.copy_files(str(src), tmp, local, fs, **kwargs)
        fs.move(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise


def posix_parent(path: str) -> str:
    """The parent of a file-system path (``a/b/c`` → ``a/b``)."""
    return path.rsplit("/", 1)[0] if "/" in path else ""


def posix_name(path: str) -> str:
    """The last component of a file-system path."""
    return path.rsplit("/", 1)[-1]


def sync_up(local: str | os.PathLike[str], uri: str) -> list[str]:
    """Upload the files of ``local`` that changed since the last sync to ``uri``.

    Files go up in :data:`UPLOAD_ORDER`, one at a time, each atomically; the manifest records
    what is up, so a file uploaded once (a checkpoint) is not uploaded again.

    Returns:
        The uploaded files, relative to ``local``, in upload order.
    """
    root = Path(local)
    if not root.is_dir():
        return []
    manifest = _read_manifest(root)
    changed = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not _skipped(rel) and manifest.get(rel) != _stamp(path):
            changed.append(rel)
    if not changed:
        return []
    fs, base = filesystem(uri)
    done = []
    try:
        for rel in sorted(changed, key=lambda r: (upload_rank(r), r)):
            stamp = _stamp(root / rel)
            _put(root / rel, fs, f"{base}/{rel}")
            manifest[rel] = stamp
            done.append(rel)
    finally:
        if done:
            atomic_write_text(root / MANIFEST, json.dumps(manifest, sort_keys=True))
    log.info("uploaded %d file(s) to %s", len(done), uri)
    return done


def _remote_files(fs: Any, base: str) -> list[tuple[str, int]]:
    """``(path relative to base, size)`` of every remote file outside :data:`REMOTE_ONLY`."""
    import pyarrow.fs as pafs

    out = []
    top = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    for info in top:
        name = posix_name(info.path)
        if info.type == pafs.FileType.File:
            out.append((name, info.size))
        elif info.type == pafs.FileType.Directory and name not in REMOTE_ONLY:
            below = fs.get_file_info(pafs.FileSelector(info.path, recursive=True))
            for sub in below:
                if sub.type == pafs.FileType.File:
                    out.append((f"{name}/{sub.path[len(info.path) :].lstrip('/')}", sub.size))
    return [(rel, size) for rel, size in out if not _skipped(rel)]


def sync_down(uri: str, local: str | os.PathLike[str]) -> bool:
    """Make the staging copy ``local`` hold the run at ``uri`` before a (re)start.

    Remote files replace local ones (stage-2 checkpoints already there with the right size are
    kept: a trial's checkpoint is written once). Local files the remote lacks stay (a stage
    finished but not uploaded before a crash). Without ``config.yaml`` at ``uri`` there is no
    run there, and a leftover staging copy is cleared.

    Returns:
        Whether ``uri`` held a run.
    """
    import pyarrow.fs as pafs

    root = Path(local)
    fs, base = filesystem(uri)
    try:
        probe = fs.get_file_info(f"{base}/config.yaml")
    except OSError as exc:  # no access, no network: say so in one line
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"--storage {uri!r}: cannot read it: {message}") from exc
    if probe.type != pafs.FileType.File:
        if root.exists():
            log.info("clearing %s: %s holds no run", root, uri)
            shutil.rmtree(root)
        return False
    manifest = _read_manifest(root)
    kept = 0
    remote = _remote_files(fs, base)
    for rel, size in remote:
        dest = root / rel
        if rel.startswith("checkpoints/") and dest.is_file() and dest.stat().st_size == size:
            kept += 1
        else:
            with atomic_path(dest) as tmp:
                pafs.copy_files(f"{base}/{rel}", str(tmp), fs, pafs.LocalFileSystem())
        manifest[rel] = _stamp(dest)
    atomic_write_text(root / MANIFEST, json.dumps(manifest, sort_keys=True))
    log.info("downloaded %d file(s) from %s (%d kept)", len(remote) - kept, uri, kept)
    return True


def fetch(location: str | os.PathLike[str]) -> Path:
    """A local path holding what ``location`` names: the path itself, or for a URI (the same
    schemes as ``--storage``) a staging copy of the run folder, checkpoint folder or file there.

    What ``rts search --storage URI`` wrote is read back this way by ``rts analyze``, ``rts
    report`` and ``rts attack``: a run folder (it has ``config.yaml``) is synchronised like a
    resume (:func:`sync_down`, Ray's own state left remote); anything else is copied.

    Raises:
        FileNotFoundError: nothing at the URI.
        ValueError: a bad or unreadable URI (one line).
    """
    import pyarrow.fs as pafs

    text = os.fspath(location)
    if not is_uri(text):
        return Path(text).expanduser()
    uri = check_uri(text.rstrip("/"))
    parent, _, name = uri.rpartition("/")
    local = staging_dir(parent, name)
    fs, base = filesystem(uri)
    try:
        info = fs.get_file_info(base)
    except OSError as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"{uri!r}: cannot read it: {message}") from exc
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"nothing at {uri!r}")
    if info.type == pafs.FileType.File:
        with atomic_path(local) as tmp:
            pafs.copy_files(base, str(tmp), fs, pafs.LocalFileSystem())
        return local
    if sync_down(uri, local):
        return local
    for rel, _size in _remote_files(fs, base):
        with atomic_path(local / rel) as tmp:
            pafs.copy_files(f"{base}/{rel}", str(tmp), fs, pafs.LocalFileSystem())
    return local


# --------------------------------------------------------------------------------------------
# The Optuna journal inside the searcher's saved state

_journal_target: list[str] = []
"""Stack of journal paths set by :func:`journal_at` (the innermost one wins)."""


@contextlib.contextmanager
def journal_at(path: str | os.PathLike[str]) -> Iterator[None]:
    """Within this block, a searcher that Ray restores writes its journal to ``path`` and uses
    it, wherever it was saved (:func:`journal_target`)."""
    _journal_target.append(os.fspath(path))
    try:
        yield
    finally:
        _journal_target.pop()


def journal_target(path: str | os.PathLike[str]) -> str:
    """Where a restored searcher puts its journal: the innermost :func:`journal_at`, else
    ``path`` (where it was saved)."""
    return _journal_target[-1] if _journal_target else os.fspath(path)


def restore_journal(path: str | os.PathLike[str], content: bytes) -> bool:
    """Write ``content`` to the journal ``path`` unless the file there starts with it.

    Returns:
        Whether the file was (re)written.
    """
    target = Path(path)
    try:
        current = target.read_bytes()
    except FileNotFoundError:
        current = None
    if current is not None and current.startswith(content):
        return False
    if current:
        log.info("replacing the Optuna journal %s by the restored snapshot's", target)
    atomic_write_bytes(target, content)
    return True

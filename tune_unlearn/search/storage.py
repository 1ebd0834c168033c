"""Where runs live (--storage-path): a folder on the driver's node, or the URI of any file
system pyarrow opens (s3://, gs://, abfs://, hdfs://; an S3-compatible store with
`?endpoint_override=host:port&scheme=http`), so that a run outlives the head node.

With a URI the driver works on a local copy, a staging folder in the cache (one per URI), and
uploads the run after each phase and after every trial that ends, so a lost head loses at most
the trials that were running. A resume, `export` and `report` download the run first. Tune only
ever sees the local copy, and the trials never touch the store: the driver writes every file of
the run (trial_files.py). Optuna's SQLite study is uploaded as a snapshot taken with SQLite's
backup API, consistent however busy the searcher is.

Which copy wins: where the staging folder already holds the run (the same machine resuming), its
files are kept and only what it lacks is downloaded, since the driver writes there first; on a
new machine everything is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse, urlunparse

from ..errors import UserError
from ..files import default_cache_dir
from .results import SEARCH_FILE, STUDY_FILE


@dataclass
class RunStore:
    """The runs of one --storage-path: `local` is the folder Tune and the driver write to (the
    staging copy for a URI); `uri`, where it is kept (None: `local` is the place)."""

    local: Path
    uri: str | None = None
    _uploaded: dict = field(default_factory=dict, repr=False, compare=False)  # relative path -> (mtime_ns, size)

    @classmethod
    def of(cls, storage_path: str) -> "RunStore":
        """The store of a --storage-path; a URI no file system takes is refused in one line."""
        if "://" not in storage_path:
            return cls(Path(storage_path).expanduser().resolve())
        url = urlparse(storage_path)
        if url.scheme == "file":
            if url.netloc not in ("", "localhost") or not url.path.startswith("/"):
                raise UserError(f"--storage-path {storage_path}: a file URI needs an absolute path (file:///path)")
            return cls(Path(unquote(url.path)).resolve())
        store = cls(default_cache_dir() / "staging" / hashlib.sha256(storage_path.encode()).hexdigest()[:16],
                    storage_path)
        store._filesystem()  # refuse a URI pyarrow cannot open now, before any work
        return store

    @classmethod
    def of_run(cls, run: str) -> tuple["RunStore", str]:
        """The store and name of one run, given as its folder or its URI (export, report)."""
        if "://" not in run or run.startswith("file://"):
            path = RunStore.of(run).local
            return cls(path.parent), path.name
        url = urlparse(run)
        parent, _, name = url.path.rstrip("/").rpartition("/")
        if not name:
            raise UserError(f"{run}: name a run, e.g. s3://bucket/runs/<name>")
        return cls.of(urlunparse(url._replace(path=parent))), name

    @classmethod
    def fetch_run(cls, run: str) -> tuple["RunStore", str]:
        """The store and name of a run given as its folder or URI, its files brought here; a
        UserError where there is no search."""
        store, name = cls.of_run(run)
        if not store.download(name):
            raise UserError(f"{run} is not a tune_unlearn search (no {SEARCH_FILE})")
        return store, name

    def _filesystem(self):
        """(pyarrow file system, the URI's path in it)."""
        import pyarrow.fs as pafs

        try:
            return pafs.FileSystem.from_uri(self.uri)
        except (ValueError, OSError) as exc:
            raise UserError(f"--storage-path {self.uri}: {str(exc).splitlines()[0]}") from None

    def where(self, name: str) -> str:
        """The run's place as the user named it."""
        if not self.uri:
            return str(self.local / name)
        url = urlparse(self.uri)
        return urlunparse(url._replace(path=f"{url.path.rstrip('/')}/{name}"))

    def download(self, name: str) -> bool:
        """Bring the run into the staging folder (what it lacks); False where the store has no such run."""
        if not self.uri:
            return (self.local / name / SEARCH_FILE).is_file()
        import pyarrow.fs as pafs

        fs, root = self._filesystem()
        remote = f"{root.rstrip('/')}/{name}"
        if fs.get_file_info(f"{remote}/{SEARCH_FILE}").type != pafs.FileType.File:
            return False
        local = self.local / name
        keep = (local / SEARCH_FILE).is_file()  # this machine's copy is at least as new as what it uploaded
        for info in fs.get_file_info(pafs.FileSelector(remote, recursive=True)):
            if info.type != pafs.FileType.File:
                continue
            target = local / info.path[len(remote) + 1:]
            if keep and target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as source, open(target, "wb") as out:
                out.write(source.read())
        return True

    def latest(self) -> str | None:
        """The name of the run last changed (for --resume without --name), or None."""
        if not self.uri:
            found = sorted(self.local.glob(f"*/{SEARCH_FILE}"), key=lambda p: p.stat().st_mtime)
            return found[-1].parent.name if found else None
        import pyarrow.fs as pafs

        fs, root = self._filesystem()
        runs = [i for i in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
                if i.type == pafs.FileType.Directory
                and fs.get_file_info(f"{i.path}/{SEARCH_FILE}").type == pafs.FileType.File]
        newest = max(runs, key=lambda i: fs.get_file_info(f"{i.path}/{SEARCH_FILE}").mtime, default=None)
        return newest.base_name if newest else None

    def upload(self, name: str) -> None:
        """Copy what changed in the run's local folder since the last upload to the store."""
        if not self.uri:
            return
        fs, root = self._filesystem()
        remote, local = f"{root.rstrip('/')}/{name}", self.local / name
        fs.create_dir(remote, recursive=True)
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            relative = path.relative_to(local).as_posix()
            if relative.startswith(f"{STUDY_FILE}-") or relative.endswith(".tmp"):  # SQLite's journal, half-written files
                continue
            if relative == STUDY_FILE:
                _upload_snapshot(fs, path, f"{remote}/{relative}")
                continue
            stat = path.stat()
            if self._uploaded.get(relative) == (stat.st_mtime_ns, stat.st_size):
                continue
            with open(path, "rb") as source, fs.open_output_stream(f"{remote}/{relative}") as out:
                out.write(source.read())
            self._uploaded[relative] = (stat.st_mtime_ns, stat.st_size)


def _upload_snapshot(fs, database: Path, target: str) -> None:
    """A consistent copy of a live SQLite database (the backup API), uploaded."""
    fd, tmp = tempfile.mkstemp(suffix=".db")
    os.close(fd)
    try:
        source, copy = sqlite3.connect(database, timeout=30), sqlite3.connect(tmp)
        try:
            source.backup(copy)
        finally:
            source.close()
            copy.close()
        with open(tmp, "rb") as snapshot, fs.open_output_stream(target) as out:
            out.write(snapshot.read())
    finally:
        os.unlink(tmp)

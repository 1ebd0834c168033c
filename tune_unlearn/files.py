"""Small file helpers shared by the command line and the cache, free of torch: the cache
directory, atomic writes, a lock between processes, progress lines on stderr."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable


def default_cache_dir() -> Path:
    return Path(os.environ.get("TUNE_UNLEARN_CACHE", Path.home() / ".cache" / "tune_unlearn")).expanduser().resolve()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same directory, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


@contextlib.contextmanager
def exclusive(lock_file: Path):
    """Hold an exclusive advisory lock on `lock_file` (created if missing) for the block: other
    processes (or threads) asking for it wait. A no-op where the system has no flock."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(Path(path), json.dumps(obj, indent=2, default=str) + "\n")


def log_stderr(message: str) -> None:
    from .progress_bar import say  # above any progress bar on a terminal

    say(message)


def sqlite_url(path: str | Path) -> str:
    """sqlite:////abs/path (SQLAlchemy's form of an absolute path), for the stores a search keeps
    in its run directory (the Optuna study, the MLflow runs)."""
    return f"sqlite:///{Path(path).resolve()}"

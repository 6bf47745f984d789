"""Atomic writers: a reader never sees half a file, and an interrupted stage leaves the old output intact.

`atomic_dir` does the same for a whole folder of outputs (a placement's scripts, the ingest's tables): an
interrupt leaves either nothing new or the previous complete set, never 483 scripts beside a placement.json
listing 1,000 GPUs.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adaptwin.errors import InputError

#: hidden file listing what `atomic_dir` wrote: a folder holding only those files may be replaced
MANIFEST = ".adaptwin-output"


class OutputDirError(InputError):
    """An output folder that cannot be (re)placed: a file of that name, or a folder holding other files."""


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def dumps_json(obj: Any) -> str:
    """Canonical JSON (sorted keys, fixed float repr) so equal results give byte-identical files."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=_default) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as canonical JSON, atomically."""
    text = dumps_json(obj)
    return atomic_write(path, lambda p: p.write_text(text))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically."""
    return atomic_write(path, lambda p: p.write_text(text))


def write_parquet(path: str | os.PathLike, frame: Any) -> Path:
    """Write a polars DataFrame to Parquet atomically."""
    return atomic_write(path, lambda p: frame.write_parquet(p))


def _default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def check_output_dir(path: str | os.PathLike, known: str = "") -> None:
    """Refuse ``path`` as an output folder unless it is absent, empty, or holds only outputs we wrote
    (listed in its `MANIFEST`, or names matching the regular expression ``known``): replacing it must never
    delete a user's own files (think ``--out .``)."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise OutputDirError(f"{path}: exists and is not a folder (choose a new or empty folder)")
    listed = set((path / MANIFEST).read_text().split("\n")) if (path / MANIFEST).is_file() else set()
    for entry in sorted(path.iterdir()):
        ours = entry.name == MANIFEST or entry.name in listed or bool(known and re.fullmatch(known, entry.name))
        if not (ours and entry.is_file()):
            raise OutputDirError(f"{path}: holds {entry.name!r}, which adaptwin did not write there "
                                 "(choose a new or empty folder)")


@contextmanager
def atomic_dir(path: str | os.PathLike, known: str = "") -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to fill; on success it replaces ``path`` in one rename.

    ``path`` is checked first (`check_output_dir`). On any exception, including KeyboardInterrupt, the
    temporary folder is removed and ``path`` is left as it was."""
    path = Path(path)
    check_output_dir(path, known)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        (tmp / MANIFEST).write_text("\n".join(sorted(p.name for p in tmp.iterdir())) + "\n")
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        _swap_into_place(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_into_place(new: Path, path: Path) -> None:
    """Move folder ``new`` to ``path``; an existing ``path`` is exchanged atomically where the OS allows
    (Linux renameat2), else renamed aside first, and then deleted."""
    if not path.exists():
        os.rename(new, path)
        return
    if not _exchange(new, path):
        aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.rename(path, aside / path.name)
        os.rename(new, path)
        new = aside
    shutil.rmtree(new, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2  # the C library the interpreter runs on
    except (OSError, AttributeError, TypeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0

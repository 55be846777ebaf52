"""Files only their owner may read: the state directory and the SQLite database in it.

Guarantees:
- `private_directory` creates a missing directory with mode 0700, and takes the group's and
  others' permissions off an existing one (a 0755 directory becomes 0700);
- `private_sqlite_file` creates a missing database file with mode 0600 before SQLite opens
  it (SQLite then gives its `-wal` and `-shm` files the same mode), takes the group's and
  others' permissions off an existing database and its `-wal`, `-shm` and `-journal` files,
  and creates a missing parent directory with mode 0700 (an existing parent is left as it is:
  it may be any directory the operator chose);
- a path the process may not change (owned by another user) is left as it is, with a warning
  naming it, never an error.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

DIRECTORY_MODE: Final = 0o700
FILE_MODE: Final = 0o600
SQLITE_COMPANIONS: Final = ("-wal", "-shm", "-journal")
_SHARED_BITS: Final = 0o077


def private_directory(path: Path) -> Path:
    """`path` as a directory only its owner may enter, read or write."""
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    tighten(path)
    return path


def private_sqlite_file(path: Path) -> Path:
    """`path` as an SQLite database file (and companions) only its owner may read or write."""
    path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    if not path.exists():  # an empty file is a database; SQLite would make it 0644
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    for file in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS)):
        if file.exists():
            tighten(file)
    return path


def tighten(path: Path) -> None:
    """Take the group's and others' permissions off `path`, if it has any."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & _SHARED_BITS:
            os.chmod(path, mode & ~_SHARED_BITS)
            log.info("made %s private to its owner (mode %o, was %o)", path,
                     mode & ~_SHARED_BITS, mode)
    except PermissionError as exc:
        log.warning("could not make %s private to its owner: %s", path, exc)

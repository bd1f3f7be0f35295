"""Writing files that hold secrets (private keys, PKCS#12 bundles): owner-only from the start.

One writer for every private file of the tree, so that the rule is applied the same way
everywhere: the file is created with mode 0600 by `open(2)` itself, since writing first and
chmod-ing afterwards leaves a window in which another local user can open it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_private"]

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def write_private(path: Path | str, data: bytes, *, exclusive: bool = False) -> Path:
    """Write ``data`` to ``path`` with mode 0600; return the path.

    The parent folder is created 0700 when it does not exist (an existing folder keeps its
    mode). ``exclusive`` refuses to replace an existing file (``O_EXCL``: `FileExistsError`);
    otherwise an existing file is truncated and brought back to 0600 before anything is
    written to it (``O_CREAT`` only applies the mode to a file it creates).
    """
    path = Path(path)
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), PRIVATE_FILE_MODE)  # a pre-existing file or a narrow umask
        fh.write(data)
    return path

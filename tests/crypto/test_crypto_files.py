"""`crypto.files.write_private`: the one writer of private keys and PKCS#12 bundles."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from crypto.files import write_private


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    """A umask that hides nothing: the modes seen are the ones the writer asked for."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_new_file_is_0600_and_new_parent_0700(tmp_path: Path, open_umask) -> None:
    path = write_private(tmp_path / "private" / "k.pem", b"secret")
    assert path == tmp_path / "private" / "k.pem"
    assert path.read_bytes() == b"secret"
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700


def test_existing_parent_keeps_its_mode(tmp_path: Path, open_umask) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    write_private(folder / "k.pem", b"x")
    assert _mode(folder) == 0o755


def test_replacing_a_readable_file_makes_it_0600(tmp_path: Path, open_umask) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(b"old content, longer than the new one")
    path.chmod(0o644)
    write_private(path, b"new")
    assert path.read_bytes() == b"new"
    assert _mode(path) == 0o600


def test_exclusive_refuses_an_existing_file(tmp_path: Path) -> None:
    path = write_private(tmp_path / "k.pem", b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        write_private(path, b"second", exclusive=True)
    assert path.read_bytes() == b"first"


def test_narrow_umask_still_gives_0600(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        path = write_private(tmp_path / "k.pem", b"x")
    finally:
        os.umask(old)
    assert _mode(path) == 0o600

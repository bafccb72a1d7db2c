"""mininsnn.atomic: the one atomic writer (temporary file, fsync, umask permissions, rename)."""
import os

import pytest

from mininsnn import atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.txt"
    atomic.write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_file(path) as tmp:
            with open(tmp, "w") as f:
                f.write("half of the new")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_the_new_file_replaces_the_old_with_the_umask_s_permissions(tmp_path):
    path = tmp_path / "g.bin"
    old = os.umask(0o027)
    try:
        atomic.write_bytes(path, b"\x00\x01")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"\x00\x01"
    assert path.stat().st_mode & 0o777 == 0o640          # not mkstemp's 0600
    atomic.write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.bin"]


def test_a_named_temporary_is_used_and_removed_on_failure(tmp_path):
    path, temp = tmp_path / "h.json", tmp_path / ".h.json.tmp"
    atomic.write_text(path, "{}", temp=temp)
    assert path.read_text() == "{}" and not temp.exists()
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_file(path, temp=temp) as tmp:
            open(tmp, "w").close()
            raise KeyboardInterrupt
    assert not temp.exists() and path.read_text() == "{}"

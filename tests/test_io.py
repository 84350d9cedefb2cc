from __future__ import annotations

import os

import pytest

from prunebench import io


def test_atomic_write_replaces_whole_files_with_normal_permissions(tmp_path):
    p = tmp_path / "sub" / "a.json"
    io.write_json(p, {"a": 1})
    assert io.read_json(p) == {"a": 1}
    mask = os.umask(0)
    os.umask(mask)
    assert (p.stat().st_mode & 0o777) == 0o666 & ~mask
    io.write_jsonl(p, [{"x": 1}, {"x": 2}])
    assert io.read_jsonl(p) == [{"x": 1}, {"x": 2}]
    assert [f.name for f in p.parent.iterdir()] == ["a.json"]  # no temp files left


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "b.txt"
    io.write_text(p, "old")

    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        io._atomic(p, boom)
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["b.txt"]

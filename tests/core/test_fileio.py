"""Atomic outputs: all-or-nothing writes, early writability checks."""
from __future__ import annotations

import hashlib
import os
import stat

import pytest

from der_deploy.errors import OutputError
from der_deploy.fileio import atomic_path, check_writable, human_size, sha256_file, write_bytes, write_text


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == tmp_path
        tmp.write_text("new")
        assert target.read_text() == "old"  # untouched until the block succeeds
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["model.onnx"]


def test_atomic_path_failure_leaves_no_file_and_no_temp(tmp_path):
    target = tmp_path / "out" / "model.onnx"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert listing(target.parent) == []


def test_atomic_path_failure_keeps_previous_version(tmp_path):
    target = tmp_path / "card.json"
    target.write_text("v1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("v2 partial")
            raise KeyboardInterrupt
    assert target.read_text() == "v1"
    assert listing(tmp_path) == ["card.json"]


def test_written_file_gets_normal_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_write_helpers_and_hash(tmp_path):
    p = write_bytes(tmp_path / "deep" / "er" / "b.bin", b"\x00\x01" * 1000)
    assert p.read_bytes() == b"\x00\x01" * 1000
    assert sha256_file(p, chunk=7) == hashlib.sha256(b"\x00\x01" * 1000).hexdigest()
    t = write_text(tmp_path / "t.txt", "héllo\n")
    assert t.read_bytes() == "héllo\n".encode("utf-8")


def test_check_writable_creates_parents_and_rejects_folders(tmp_path):
    out = check_writable(tmp_path / "new" / "dir" / "m.pt")
    assert out.parent.is_dir() and not out.exists()
    with pytest.raises(OutputError, match="is a folder"):
        check_writable(tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="cannot create folder"):
        check_writable(tmp_path / "afile" / "m.pt")


def test_check_writable_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user (e.g. root) who can write to read-only folders")
        with pytest.raises(OutputError, match="not writable"):
            check_writable(ro / "m.pt")
        with pytest.raises(OutputError):
            write_text(ro / "m.txt", "x")
    finally:
        ro.chmod(0o755)


def test_human_size():
    assert human_size(0) == "0 B"
    assert human_size(1023) == "1023 B"
    assert human_size(1536) == "1.5 KB"
    assert human_size(5 * 1024**2) == "5.0 MB"
    assert human_size(3 * 1024**4) == "3072.0 GB"


def test_check_writable_reports_unwritable_folder_even_as_root(tmp_path, monkeypatch):
    # Root bypasses permission bits, so simulate the kernel's answer to exercise the error path everywhere.
    import der_deploy.fileio as fileio

    monkeypatch.setattr(fileio.os, "access", lambda p, mode: False)
    with pytest.raises(OutputError, match=r"folder .* is not writable; choose another output path"):
        check_writable(tmp_path / "m.pt")
    assert listing(tmp_path) == []

"""Safe extraction of an uploaded version tarball (tar.gz of a version directory)."""
from __future__ import annotations

import tarfile
from pathlib import Path

REQUIRED = ("model.onnx", "tokenizer.json", "manifest.json")


class UnsafeArchive(ValueError):
    pass


def extract_version_archive(archive: Path, dest: Path) -> Path:
    """Extract regular files and dirs only; refuse absolute paths, '..', links and devices.

    Returns the directory holding model.onnx (the archive may wrap it in one top folder).
    """
    try:
        tar = tarfile.open(archive, "r:gz")
    except (tarfile.TarError, OSError) as e:
        raise UnsafeArchive(f"not a readable tar.gz: {e}") from e
    with tar:
        members = tar.getmembers()
        for m in members:
            name = m.name
            if name.startswith("/") or Path(name).is_absolute():
                raise UnsafeArchive(f"archive member {name!r} has an absolute path")
            if ".." in Path(name).parts:
                raise UnsafeArchive(f"archive member {name!r} escapes the archive ('..')")
            if m.issym() or m.islnk():
                raise UnsafeArchive(f"archive member {name!r} is a link")
            if not (m.isfile() or m.isdir()):
                raise UnsafeArchive(f"archive member {name!r} is not a regular file or directory")
        # filter="data" is the stdlib's own guard as a second line of defence.
        tar.extractall(dest, members=members, filter="data")
    found = [p.parent for p in dest.rglob("model.onnx")]
    if len(found) != 1:
        raise UnsafeArchive("archive must contain exactly one model.onnx")
    root = found[0]
    missing = [f for f in REQUIRED if not (root / f).is_file()]
    if missing:
        raise UnsafeArchive(f"archive is missing {', '.join(missing)}")
    return root

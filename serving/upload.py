"""Safe extraction of uploaded archives: a version tarball (tar.gz of a version directory) and a
BEIR zip (training data)."""
from __future__ import annotations

import stat
import tarfile
import zipfile
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
            if why := _unsafe_name(name):
                raise UnsafeArchive(f"archive member {name!r} {why}")
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


def _unsafe_name(name: str) -> str | None:
    if name.startswith("/") or Path(name).is_absolute():
        return "has an absolute path"
    if ".." in Path(name).parts:
        return "escapes the archive ('..')"
    return None


def extract_beir_zip(archive: Path, dest: Path, max_bytes: int, max_files: int = 10_000) -> Path:
    """Extract a zip of a BEIR directory; refuse absolute paths, '..', links, and more than `max_bytes`
    unpacked (sizes as declared: zipfile never inflates a member past its declared size).

    Returns the directory holding corpus.jsonl (the zip may wrap it in one top folder)."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise UnsafeArchive(f"not a readable zip: {e}") from e
    with zf:
        members = zf.infolist()
        if len(members) > max_files:
            raise UnsafeArchive(f"zip has {len(members)} members; at most {max_files}")
        total = 0
        for m in members:
            if why := _unsafe_name(m.filename):
                raise UnsafeArchive(f"zip member {m.filename!r} {why}")
            if stat.S_ISLNK(m.external_attr >> 16):
                raise UnsafeArchive(f"zip member {m.filename!r} is a link")
            total += m.file_size
            if total > max_bytes:
                raise UnsafeArchive(f"zip unpacks to over {max_bytes} bytes")
        try:
            zf.extractall(dest)
        except (zipfile.BadZipFile, OSError, EOFError) as e:  # a corrupt member (CRC, truncated)
            raise UnsafeArchive(f"zip cannot be unpacked: {e}") from e
    found = [p.parent for p in dest.rglob("corpus.jsonl") if "__MACOSX" not in p.parts]
    if len(found) != 1:
        raise UnsafeArchive(f"zip must contain exactly one corpus.jsonl (BEIR layout: corpus.jsonl, "
                            f"queries.jsonl, qrels/<split>.tsv); found {len(found)}")
    return found[0]

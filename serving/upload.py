"""Safe extraction of uploaded archives: a version tarball (tar.gz of a version directory), published
here, and a BEIR zip (training data).

Blocking work (gunzip, hashing, load checks): the route runs `publish_upload` in a worker thread,
never on the event loop that answers /rerank.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable

from starlette.requests import Request

from state.registry import Registry

log = logging.getLogger(__name__)

REQUIRED = ("model.onnx", "tokenizer.json", "manifest.json")


class UnsafeArchive(ValueError):
    pass


@asynccontextmanager
async def received_body(request: Request, name: str) -> AsyncIterator[Path]:
    """The request's body streamed into a file of a private temporary directory (the BodyLimit middleware
    bounds it: 413), removed with everything in it when the block ends."""
    tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="upload-"))
    try:
        path = tmp / name
        with open(path, "wb") as f:
            async for chunk in request.stream():
                f.write(chunk)
        yield path
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


def _unsafe_name(name: str) -> str | None:
    if name.startswith("/") or Path(name).is_absolute():
        return "has an absolute path"
    if ".." in Path(name).parts:
        return "escapes the archive ('..')"
    return None


def extract_version_archive(archive: Path, dest: Path, max_bytes: int, max_members: int) -> Path:
    """Extract regular files and dirs only; refuse absolute paths, '..', links, devices, more than
    `max_members` members or `max_bytes` unpacked, and any truncated or corrupt archive.

    Streams the archive once, member by member, so a gzip bomb is refused at its first oversized
    header instead of after inflating it. Returns the directory holding model.onnx (the archive may
    wrap it in one top folder).
    """
    count = total = 0
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for m in tar:
                count += 1
                if count > max_members:
                    raise UnsafeArchive(f"archive has more than {max_members} members")
                if why := _unsafe_name(m.name):
                    raise UnsafeArchive(f"archive member {m.name!r} {why}")
                if m.issym() or m.islnk():
                    raise UnsafeArchive(f"archive member {m.name!r} is a link")
                if not (m.isfile() or m.isdir()):
                    raise UnsafeArchive(f"archive member {m.name!r} is not a regular file or directory")
                total += m.size
                if total > max_bytes:
                    raise UnsafeArchive(f"archive unpacks to more than {max_bytes} bytes")
                # filter="data" is the stdlib's own guard as a second line of defence.
                tar.extract(m, dest, filter="data")
    except UnsafeArchive:
        raise
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise UnsafeArchive(f"not a readable tar.gz (truncated or corrupt): {e}") from e
    except OSError as e:  # gzip's own "not a gzipped file" / a short read; paths stay in the log
        log.warning("upload extraction failed: %s", e)
        why = e.strerror or (str(e.args[0]) if e.args else type(e).__name__)
        raise UnsafeArchive(f"not a readable tar.gz (truncated or corrupt): {why}") from e
    found = [p.parent for p in dest.rglob("model.onnx")]
    if len(found) != 1:
        raise UnsafeArchive("archive must contain exactly one model.onnx")
    root = found[0]
    missing = [f for f in REQUIRED if not (root / f).is_file()]
    if missing:
        raise UnsafeArchive(f"archive is missing {', '.join(missing)}")
    return root


def publish_upload(registry: Registry, domain: str, archive: Path, workdir: Path,
                   check: Callable[[Path], None], max_bytes: int, max_members: int) -> str:
    """Extract (with the caps), verify the manifest's sha256 values if it lists any, load-check
    with `check`, publish as a candidate. Blocking: run it in a worker thread."""
    root = extract_version_archive(archive, workdir, max_bytes=max_bytes, max_members=max_members)
    return registry.publish_dir(domain, root, False, check)


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

"""Versioned model registry on a local (or shared) filesystem.

Layout under the registry root:
    <domain>/domain.json       mutable config + version statuses (replaced atomically)
    <domain>/v<N>/             immutable version directory (model.onnx, tokenizer, config.json, manifest.json)
    <domain>/.staging/<uuid>/  work area; publishing renames it to v<N>
    _base/<slug>/              the base model, built once (never a valid domain id: starts with "_")

Concurrency: every read-modify-write of a domain takes an exclusive flock on <domain>/.lock,
so two publishers to one domain get different version numbers. Promote is conditional (the version it
replaces must still be the active one when it flips), and nothing resurrects a deleted version.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from scoring.files import MANIFEST, MODEL_ONNX
from state.atomic import write_json_atomic
from state.ids import InvalidId, model_id, parse_version, validate_domain, version_name

DOMAIN_FILE = "domain.json"
STAGING = ".staging"


class RegistryError(Exception):
    """A registry operation that cannot be done as asked (maps to 4xx)."""


class NotFound(RegistryError):
    pass


class Conflict(RegistryError):
    """A conditional change found another version active than the caller expected (-> 409 naming it)."""

    def __init__(self, message: str, active: str | None):
        super().__init__(message)
        self.active = active


# `expected_active` of promote(): the version active when the call starts (the default), so that of two
# promotes at the same moment one wins and the other is a Conflict instead of both "succeeding".
CURRENT = object()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def base_slug(name: str, max_length: int, openvino: bool) -> str:
    """The base model's directory name for (model, max_length, engine); never a valid domain id."""
    clean = re.sub(r"[^a-zA-Z0-9_.-]+", "_", name)[-48:]
    return f"{clean}-{max_length}{'-ov' if openvino else ''}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def check_declared_files(declared: Any, actual: dict[str, str]) -> None:
    """Raise RegistryError unless `declared` (a manifest's `files`: name -> sha256) names exactly the
    files in `actual`, each with its hash: what was sent is what arrived."""
    if not isinstance(declared, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in declared.items()):
        raise RegistryError("manifest.json: files must map file names to sha256 hex digests")
    problems = []
    wrong = sorted(k for k in declared.keys() & actual.keys() if declared[k].lower() != actual[k])
    if wrong:
        problems.append("sha256 mismatch for " + ", ".join(wrong))
    if missing := sorted(declared.keys() - actual.keys()):
        problems.append("listed but not sent: " + ", ".join(missing))
    if extra := sorted(actual.keys() - declared.keys()):
        problems.append("sent but not listed: " + ", ".join(extra))
    if problems:
        raise RegistryError("manifest.json files do not match the files: " + "; ".join(problems))


def _reactivate_previous(cfg: dict[str, Any]) -> str | None:
    """Pop the history down to the latest version that did not fail and make it active (in cfg)."""
    while cfg["history"]:
        prev = cfg["history"].pop()
        if cfg["versions"].get(prev, {}).get("status") != "failed":
            cfg["active"] = prev
            cfg["versions"][prev] = {"status": "active", "updated": time.time()}
            return prev
    return None


def _check_split(ab_split: float, name: str = "ab_split") -> None:
    if not 0.0 <= ab_split <= 1.0:
        raise RegistryError(f"{name} must be between 0 and 1")


SHARES = ("ab_split", "base_share", "challenger_share")  # a domain's own traffic shares (serving/ab.py)


def _drop_challenger(cfg: dict[str, Any], name: str) -> None:
    """A failed, deleted or promoted version is no challenger any more."""
    if cfg.get("challenger") == name:
        cfg["challenger"] = cfg["challenger_since"] = None


def _default_config() -> dict[str, Any]:
    return {"active": None, "history": [], "ab_split": None, "versions": {}, "challenger": None,
            "challenger_since": None, "base_share": None, "challenger_share": None}


class Registry:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ---- paths -----------------------------------------------------------------
    def domain_dir(self, domain: str) -> Path:
        return self.root / validate_domain(domain)

    def version_dir(self, domain: str, version: str | int) -> Path:
        return self.domain_dir(domain) / version_name(parse_version(version))

    def base_dir(self, model: str, max_length: int, openvino: bool) -> Path:
        """The base model's version dir (exporters/base_model.py builds it there on first start)."""
        return self.root / "_base" / base_slug(model, max_length, openvino)

    @contextmanager
    def _locked(self, domain: str, create: bool = False) -> Iterator[Path]:
        """The domain's lock. Only `create` makes the directory: a request about an unknown domain
        gets NotFound and leaves nothing behind."""
        d = self.domain_dir(domain)
        if create:
            d.mkdir(parents=True, exist_ok=True)
        elif not (d / DOMAIN_FILE).exists():
            raise NotFound(f"unknown domain {domain!r}")
        with open(d / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield d
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_config(self, domain: str) -> dict[str, Any]:
        path = self.domain_dir(domain) / DOMAIN_FILE
        if not path.exists():
            return _default_config()
        return {**_default_config(), **json.loads(path.read_text())}

    def _write_config(self, domain: str, cfg: dict[str, Any]) -> None:
        write_json_atomic(self.domain_dir(domain) / DOMAIN_FILE, cfg)

    # ---- reads -----------------------------------------------------------------
    def domains(self) -> list[str]:
        out = []
        for p in sorted(self.root.iterdir()):
            if p.is_dir() and (p / DOMAIN_FILE).exists():
                try:
                    out.append(validate_domain(p.name))
                except InvalidId:
                    continue
        return out

    def exists(self, domain: str) -> bool:
        return (self.domain_dir(domain) / DOMAIN_FILE).exists()

    def config(self, domain: str) -> dict[str, Any]:
        if not self.exists(domain):
            raise NotFound(f"unknown domain {domain!r}")
        return self._read_config(domain)

    def manifest(self, domain: str, version: str | int) -> dict[str, Any]:
        path = self.version_dir(domain, version) / MANIFEST
        if not path.exists():
            raise NotFound(f"unknown version {domain}@{version_name(parse_version(version))}")
        return json.loads(path.read_text())

    def active_version(self, domain: str) -> str | None:
        """The version serving should use for this domain, or None (answer with the base)."""
        if not self.exists(domain):
            return None
        return self._read_config(domain)["active"]

    def describe(self, domain: str) -> dict[str, Any]:
        cfg = self.config(domain)
        versions = []
        for name, info in sorted(cfg["versions"].items(), key=lambda kv: parse_version(kv[0])):
            try:
                man = self.manifest(domain, name)
            except (NotFound, json.JSONDecodeError):
                man = {}
            versions.append({"version": name, **info, "manifest": man})
        return {"domain": domain, "active": cfg["active"], "versions": versions,
                **{k: cfg[k] for k in (*SHARES, "challenger", "challenger_since")}}

    # ---- writes ----------------------------------------------------------------
    def stage(self, domain: str) -> Path:
        """A fresh private directory to build a version in; pass it to publish()."""
        d = self.domain_dir(domain) / STAGING / uuid.uuid4().hex
        for attempt in range(3):
            try:
                d.mkdir(parents=True)
                return d
            except FileNotFoundError:  # another publisher's unstage() removed the empty parent just now
                if attempt == 2:
                    raise
        return d

    def unstage(self, domain: str, staged: Path) -> None:
        """Remove a staged directory that was not published, and `.staging/` itself once empty."""
        shutil.rmtree(staged, ignore_errors=True)
        self._drop_empty_staging(domain)

    def _drop_empty_staging(self, domain: str) -> None:
        """`.staging/` once empty, and the domain's directory if that leaves it empty (a first
        publish that failed): rmdir removes only empty directories, so concurrent work is safe."""
        for d in (self.domain_dir(domain) / STAGING, self.domain_dir(domain)):
            try:
                d.rmdir()
            except OSError:  # not empty (another publisher is at work, or a real domain) or gone
                return

    def publish(self, domain: str, staged: Path, manifest: dict[str, Any], activate: bool = False,
                files: dict[str, str] | None = None) -> str:
        """Seal a staged directory as the next version. Atomic: it appears whole or not at all.
        `files`: the staged files' sha256, when the caller has already computed them."""
        staged = Path(staged)
        if not (staged / MODEL_ONNX).is_file():
            raise RegistryError(f"a version needs {MODEL_ONNX}")
        files = file_hashes(staged) if files is None else files
        with self._locked(domain, create=True) as d:
            cfg = self._read_config(domain)
            existing = [parse_version(p.name) for p in d.iterdir() if p.is_dir() and p.name.startswith("v")]
            existing += [parse_version(v) for v in cfg["versions"]] + [cfg.get("last_version", 0)]
            cfg["last_version"] = max(existing) + 1  # never reused, even after a delete
            name = version_name(cfg["last_version"])
            man = {**manifest, "domain": domain, "version": name, "model_id": model_id(domain, name),
                   "created": time.time(), "files": files}
            write_json_atomic(staged / MANIFEST, man)
            os.rename(staged, d / name)  # the target never exists: numbers only grow under the lock
            cfg["versions"][name] = {"status": "candidate", "updated": time.time()}
            self._write_config(domain, cfg)
        self._drop_empty_staging(domain)
        if activate:
            self.promote(domain, name)
        return name

    def publish_dir(self, domain: str, version_dir: Path, activate: bool = False,
                    check: Callable[[Path], None] | None = None) -> str:
        """Copy an already-exported version directory (e.g. an upload) in and publish it."""
        staged = self.stage(domain)
        try:
            shutil.copytree(version_dir, staged, dirs_exist_ok=True)
            man_path = staged / MANIFEST
            try:
                manifest = json.loads(man_path.read_text()) if man_path.exists() else {}
            except (ValueError, OSError) as e:
                raise RegistryError(f"manifest.json is not readable JSON: {e}") from None
            if not isinstance(manifest, dict):
                raise RegistryError("manifest.json must be a JSON object")
            if manifest.get("kind") not in ("cross-encoder", "bi-encoder"):
                raise RegistryError("manifest.json must say kind: cross-encoder or bi-encoder")
            files = file_hashes(staged)
            if manifest.get("files") is not None:  # the sender's hashes: check what arrived against them
                check_declared_files(manifest["files"], files)
            for key in ("domain", "version", "model_id", "created", "files"):
                manifest.pop(key, None)  # the registry assigns these
            if check is not None:
                check(staged)
            return self.publish(domain, staged, manifest, activate=activate, files=files)
        finally:
            self.unstage(domain, staged)

    def verify(self, domain: str, version: str | int) -> None:
        """Raise RegistryError if any file is missing or differs from its manifest sha256."""
        vdir = self.version_dir(domain, version)
        man = self.manifest(domain, version)
        for rel, digest in man.get("files", {}).items():
            p = vdir / rel
            if not p.is_file():
                raise RegistryError(f"{domain}@{vdir.name}: file {rel} is missing")
            if sha256_file(p) != digest:
                raise RegistryError(f"{domain}@{vdir.name}: sha256 mismatch for {rel}")

    def promote(self, domain: str, version: str | int, check: Callable[[Path], None] | None = None,
                expected_active: Any = CURRENT) -> str:
        """Make a version active. Refused (and the version marked failed) if it does not verify/load.

        Conditional: `expected_active` (a version, or None for "no version active") must still be the
        active one when the registry flips, else Conflict naming the active version; by default it is the
        version active when this call starts. Promoting the version that is already active is a no-op.
        Only the version this promote replaces enters the rollback history."""
        name = version_name(parse_version(version))
        if expected_active is CURRENT:
            expected_active = self.active_version(domain)
        elif expected_active is not None:
            expected_active = version_name(parse_version(expected_active))
        self.manifest(domain, name)  # NotFound for unknown versions
        try:
            self.verify(domain, name)
            if check is not None:
                check(self.version_dir(domain, name))
        except Exception as e:  # noqa: BLE001 - any load error means this version must not serve
            if not self.mark_failed(domain, name, str(e)):
                raise NotFound(f"unknown version {domain}@{name} (deleted)") from e
            raise RegistryError(f"cannot promote {domain}@{name}: {e}") from e
        with self._locked(domain):
            cfg = self._read_config(domain)
            if not self._has_version(domain, name, cfg):
                raise NotFound(f"unknown version {domain}@{name} (deleted)")
            if cfg["versions"][name].get("status") == "failed":
                raise RegistryError(f"cannot promote {domain}@{name}: it is marked failed")
            old = cfg["active"]
            if old == name:
                return name
            if old != expected_active:
                raise Conflict(f"{domain}: {old or 'no version'} is active, but this promote of {name} expected "
                               f"{expected_active or 'no version'} to be; nothing changed", old)
            if old:
                cfg["versions"][old] = {**cfg["versions"].get(old, {}), "status": "retired", "updated": time.time()}
                cfg["history"].append(old)
            cfg["active"] = name
            cfg["versions"][name] = {"status": "active", "updated": time.time()}
            _drop_challenger(cfg, name)  # a challenger promoted (by the referee or by hand) ends its test
            self._write_config(domain, cfg)
        return name

    def _has_version(self, domain: str, name: str, cfg: dict[str, Any]) -> bool:
        """Registered and on disk (call under the lock): a deleted version is neither."""
        return name in cfg["versions"] and (self.version_dir(domain, name) / MANIFEST).is_file()

    def rollback(self, domain: str) -> str:
        """Re-activate the version that was active before the current one."""
        with self._locked(domain):
            cfg = self.config(domain)
            if cfg["active"]:
                cfg["versions"][cfg["active"]] = {**cfg["versions"][cfg["active"]], "status": "retired",
                                                  "updated": time.time()}
            prev = _reactivate_previous(cfg)
            if prev is None:
                raise RegistryError(f"{domain}: no earlier version to roll back to")
            self._write_config(domain, cfg)
        return prev

    def mark_failed(self, domain: str, version: str | int, error: str) -> bool:
        """A failed version never serves; if it was active, the previous good one takes over. False (and
        nothing written) for a version that is gone: a load that failed because a DELETE removed the
        files under it must not bring the deleted version back as "failed"."""
        name = version_name(parse_version(version))
        try:
            with self._locked(domain):
                cfg = self._read_config(domain)
                if not self._has_version(domain, name, cfg):
                    return False
                cfg["versions"][name] = {"status": "failed", "error": error[:2000], "updated": time.time()}
                _drop_challenger(cfg, name)
                if cfg["active"] == name:
                    cfg["active"] = _reactivate_previous(cfg)
                self._write_config(domain, cfg)
        except NotFound:  # the whole domain is gone
            return False
        return True

    def create(self, domain: str, ab_split: float | None = None, **shares: float | None) -> dict[str, Any]:
        """Register a new, empty domain (no versions yet); RegistryError if it exists."""
        with self._locked(domain, create=True):
            if self.exists(domain):
                raise RegistryError(f"domain {domain!r} exists already")
            cfg = _default_config()
            self._set_shares(cfg, ab_split=ab_split, **shares)
            self._write_config(domain, cfg)
        return self.describe(domain)

    def update_config(self, domain: str, ab_split: float | None = None, **shares: float | None) -> dict[str, Any]:
        """Change an existing domain's config; NotFound for an unknown domain (create() makes one).
        shares: base_share, challenger_share (None leaves one as it is)."""
        with self._locked(domain):
            cfg = self.config(domain)
            self._set_shares(cfg, ab_split=ab_split, **shares)
            self._write_config(domain, cfg)
        return self.describe(domain)

    @staticmethod
    def _set_shares(cfg: dict[str, Any], **shares: float | None) -> None:
        for name, value in shares.items():
            if name not in SHARES:
                raise RegistryError(f"unknown domain setting {name!r}")
            if value is not None:
                _check_split(value, name)
                cfg[name] = value

    def set_challenger(self, domain: str, version: str | int) -> str:
        """Put a published version under test against the active one (serving/ab.py gives it its share).
        Refused for the active version, a failed one, a domain without an active version, and while
        another challenger is under test (end that test first)."""
        name = version_name(parse_version(version))
        self.manifest(domain, name)  # NotFound for unknown versions
        with self._locked(domain):
            cfg = self._read_config(domain)
            status = cfg["versions"].get(name, {}).get("status")
            if cfg["challenger"] == name:
                return name
            if cfg["challenger"]:
                raise RegistryError(f"{domain}@{cfg['challenger']} is under test already: end that test first")
            if not cfg["active"]:
                raise RegistryError(f"{domain} has no active version to challenge: promote one first")
            if status in ("active", "failed"):
                raise RegistryError(f"{domain}@{name} is {status}: it cannot be the challenger")
            cfg["challenger"], cfg["challenger_since"] = name, time.time()
            cfg["versions"][name] = {"status": "challenger", "updated": time.time()}
            self._write_config(domain, cfg)
        return name

    def end_challenge(self, domain: str, version: str | int) -> None:
        """The test of `version` is over without a promotion (promote() ends it otherwise): it stops being
        the challenger and is retired. RegistryError when it is not the domain's challenger (someone
        else ended or changed the test)."""
        name = version_name(parse_version(version))
        with self._locked(domain):
            cfg = self._read_config(domain)
            if cfg["challenger"] != name:
                raise RegistryError(f"{domain}@{name} is not the challenger (now: {cfg['challenger']})")
            _drop_challenger(cfg, name)
            cfg["versions"][name] = {**cfg["versions"].get(name, {}), "status": "retired", "updated": time.time()}
            self._write_config(domain, cfg)

    def delete_version(self, domain: str, version: str | int) -> None:
        name = version_name(parse_version(version))
        with self._locked(domain):
            cfg = self.config(domain)
            if name not in cfg["versions"] and not self.version_dir(domain, name).exists():
                raise NotFound(f"unknown version {domain}@{name}")
            if cfg["active"] == name:
                raise RegistryError(f"{domain}@{name} is active: promote or roll back first")
            cfg["versions"].pop(name, None)
            _drop_challenger(cfg, name)
            cfg["history"] = [v for v in cfg["history"] if v != name]
            self._write_config(domain, cfg)
            shutil.rmtree(self.version_dir(domain, name), ignore_errors=True)

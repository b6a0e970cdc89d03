"""Validation of domain ids and version names before they touch a path."""
from __future__ import annotations

import re

DOMAIN_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
VERSION_RE = re.compile(r"^v?([1-9][0-9]{0,8})$")
BASE_MODEL_ID = "base"
# the second base of base routing (RERANKER_MULTILINGUAL_BASE); never a domain id nor a version id
MULTILINGUAL_BASE_ID = "base:multilingual"


class InvalidId(ValueError):
    pass


def validate_domain(domain: str) -> str:
    if not isinstance(domain, str) or not DOMAIN_RE.fullmatch(domain):
        raise InvalidId(f"invalid domain id {domain!r}: must match {DOMAIN_RE.pattern}")
    return domain


def parse_version(version: str | int) -> int:
    """Accepts 2, '2' or 'v2'; returns 2."""
    m = VERSION_RE.fullmatch(str(version).strip())
    if not m:
        raise InvalidId(f"invalid version {version!r}: expected N or vN with N >= 1")
    return int(m.group(1))


def version_name(n: int) -> str:
    return f"v{n}"


def model_id(domain: str, version: str | int) -> str:
    return f"{domain}@{version_name(parse_version(version))}"


def split_model_id(mid: str) -> tuple[str, str]:
    """'legal@v7' -> ('legal', 'v7'); validates both halves."""
    domain, sep, version = mid.partition("@")
    if not sep:
        raise InvalidId(f"invalid model id {mid!r}: expected domain@vN")
    return validate_domain(domain), version_name(parse_version(version))

"""A train request checked at the door, whole, before any job record exists.

- `config`: the training options' types and ranges, from the one options schema that training publishes
  (`python -m training.inputs defaults`, cached; the same answer as GET /v1/training/options), as JSON
  Schema: unknown names, wrong types, out-of-range and non-finite numbers are refused;
- server paths (`beir`, `ragas`, `labels`, a `config.base_model` given as a path): absolute, and after
  resolving links inside one of the data roots the operator configured (RERANKER_DATA_ROOTS; default:
  the service's own uploads), and there;
- split names by pattern (serving/protocol.py), uploads of this domain only.

Every problem is a 422 naming its field (all of them at once), in the API's error shape.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from fastapi.exceptions import RequestValidationError
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from serving.protocol import TrainRequest
from state.settings import Settings
from state.uploads import UploadNotFound, UploadStore

SERVER_PATH_FORMAT = "server-path-or-model-id"  # an option that may name a path on the server


class _Problems:
    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def add(self, loc: tuple, msg: str, kind: str = "value_error") -> None:
        self.errors.append({"loc": ("body", *loc), "msg": msg, "type": kind})

    def raise_any(self) -> None:
        if self.errors:
            raise RequestValidationError(self.errors)


def server_path(value: str, roots: list[Path], directory: bool) -> str:
    """The real path of `value` if it is absolute, inside a data root and exists; else ValueError."""
    if not os.path.isabs(value):
        raise ValueError("must be an absolute path on the server")
    real = Path(os.path.realpath(value))
    if not any(real.is_relative_to(root) for root in roots):
        raise ValueError("not inside a data root of this server (RERANKER_DATA_ROOTS)")
    if not (real.is_dir() if directory else real.is_file()):
        raise ValueError(f"no such {'directory' if directory else 'file'} on the server")
    return str(real)


def _schema_message(e: SchemaError) -> str:
    """The most telling message: for a nullable option, the branch that is not the null type's."""
    inner = [c for c in e.context or [] if c.validator != "type"]
    if inner:
        return inner[0].message
    if e.validator == "anyOf":
        types = [b.get("type") for b in e.schema.get("anyOf", []) if b.get("type")]
        return f"{e.instance!r} is not of type {' or '.join(map(repr, types))}"
    return e.message


def _check_config(config: dict[str, Any], schema: dict[str, Any], roots: list[Path], problems: _Problems) -> dict:
    props = schema.get("properties", {})
    for e in Draft202012Validator(schema).iter_errors(config):
        if e.validator == "additionalProperties" and not e.absolute_path:
            for name in sorted(set(config) - set(props)):
                problems.add(("config", name), "unknown training option (GET /v1/training/options lists them)",
                             "extra_forbidden")
        else:
            problems.add(("config", *e.absolute_path), _schema_message(e))
    out = dict(config)
    for name, value in config.items():
        if isinstance(value, float) and not math.isfinite(value):
            problems.add(("config", name), "must be a finite number")
        elif props.get(name, {}).get("format") == SERVER_PATH_FORMAT and isinstance(value, str) \
                and os.path.isabs(value):
            try:
                out[name] = server_path(value, roots, directory=True)
            except ValueError as err:
                problems.add(("config", name), str(err))
    return out


def check(body: TrainRequest, domain: str, settings: Settings, schema: dict[str, Any]) -> dict[str, Any]:
    """The job's config ({"data", "train", "activate"}) for a valid request; RequestValidationError else."""
    problems = _Problems()
    if not (body.beir or body.ragas or body.labels or body.search_logs or body.expert_labels or body.uploads):
        problems.add((), "give at least one source (beir, ragas, labels, search_logs, expert_labels or uploads)")
    roots = settings.training_data_roots

    def path(loc: tuple, value: str, directory: bool) -> str:
        try:
            return server_path(value, roots, directory)
        except ValueError as e:
            problems.add(loc, str(e))
            return value

    data = {"beir": body.beir and path(("beir",), body.beir, True), "beir_split": body.split,
            "eval_split": body.eval_split, "search_logs": body.search_logs, "expert_labels": body.expert_labels,
            **{kind: [path((kind, i), p, False) for i, p in enumerate(getattr(body, kind))]
               for kind in ("ragas", "labels")}}
    _add_uploads(data, domain, body.uploads, UploadStore(settings.home), problems)
    train = _check_config(dict(body.config), schema, roots, problems)
    if body.max_queries:
        train["max_queries"] = body.max_queries
    problems.raise_any()
    return {"data": data, "train": train, "activate": body.activate}


def _add_uploads(data: dict, domain: str, ids: list[str], uploads: UploadStore, problems: _Problems) -> None:
    """Each upload id of the domain becomes the server path of its source."""
    for i, upload_id in enumerate(ids):
        try:
            kind, path = uploads.get(domain, upload_id)["kind"], str(uploads.data_path(domain, upload_id))
        except UploadNotFound:
            problems.add(("uploads", i), f"unknown upload {upload_id!r} of domain {domain!r}")
            continue
        if kind == "beir":
            if data["beir"]:
                problems.add(("uploads", i), "one BEIR source per job, and this job already has one")
            data["beir"] = path
        else:
            data[kind].append(path)

"""Schemathesis over the running service's own OpenAPI spec: generated requests, valid and invalid,
with and without the admin token. Every answer must be a non-5xx response that the spec declares
(status code, content type, body schema), and admin operations must refuse a missing token.

Bounded: FUZZ_EXAMPLES cases per operation, generation mode and token variant (a few hundred in
all); training routes are excluded (a job per case would swamp the box; test_training_http.py
covers them), and so are the autopilot's kill switch and round (a generated `killed: true` would stop
every later test's rounds; test_challenger_http.py covers them). Failures are collected per operation, so one run shows all of them.
"""
from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))
EXCLUDED = r"/train/|^/v1/autopilot/(kill|run)$"
# Rules a spec cannot say, so a schema-valid request may rightly get a 4xx there (every other check still
# runs on those operations): "any binary" is all it can say of a tar.gz upload; an object document needs
# `text` unless `rank_fields` names its fields (one field depends on another); a timeline's bucket count
# depends on since, until and bucket_s together; a label must grade a passage shown for a logged query
# (stored state); an upload's file name must fit its kind; a passages body must be JSONL lines.
_ACCEPTANCE = [schemathesis.checks.positive_data_acceptance]
NOT_EXPRESSIBLE = {op: _ACCEPTANCE for op in (
    "POST /v1/domains/{domain}/versions", "POST /rerank", "POST /v1/rerank", "POST /v2/rerank",
    "GET /v1/domains/{domain}/ab/timeline", "POST /v1/domains/{domain}/labels", "POST /v1/domains/{domain}/uploads",
    "POST /v1/domains/{domain}/passages")}


def operations(url: str) -> list:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json").exclude(path_regex=EXCLUDED)
    return [result.ok() for result in schema.get_all_operations()]


def fuzz(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """(cases run, {operation and mode: first failure})."""
    ran, failures = 0, {}
    for op in operations(url):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @SETTINGS
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case):
                nonlocal ran
                ran += 1
                case.call_and_validate(headers=headers, timeout=120, excluded_checks=NOT_EXPRESSIBLE.get(op.label, []))

            try:
                run()
            except Unsatisfiable:
                continue  # no invalid input exists (e.g. an operation without parameters)
            except (FailureGroup, Exception) as e:  # noqa: BLE001 - keep it, go on to the next operation
                failures[f"{op.label} [{mode.value}]"] = str(e)[:1500]
    return ran, failures


@pytest.mark.parametrize("token", [True, False], ids=["with the admin token", "without a token"])
def test_the_spec_holds_for_generated_requests(service, token):
    ran, failures = fuzz(service.url, service.admin if token else {})
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    assert ran >= 10 * EXAMPLES, ran  # every operation was exercised

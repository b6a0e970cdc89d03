"""Refuse JSON bodies holding lone UTF-16 surrogates, before any handler sees them.

JSON may spell `"\\ud800"`, which Python decodes to a str that cannot be encoded as UTF-8: the
tokenizer, the response encoder, the database and /metrics would each fail on it later. One app-wide
dependency checks every JSON body a route declares (any wire model, any route), and answers 422
naming the field. A valid pair (an emoji written as two escapes) decodes to one code point and passes.
"""
from __future__ import annotations

import re
from typing import Any

from fastapi import Request
from fastapi import params

from serving.rerank_service import BadRequest

_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate_at(value: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The path (keys and list indices) of the first string, or object key, holding a lone surrogate."""
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            if _SURROGATE.search(k):
                return path
            found = lone_surrogate_at(v, (*path, k))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = lone_surrogate_at(v, (*path, str(i)))
            if found is not None:
                return found
    return None


async def reject_lone_surrogates(request: Request) -> None:
    """App-wide dependency. FastAPI has parsed a route's JSON body before dependencies run, and
    `request.json()` returns that cached value, so this costs one walk and no second parse."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    if body_field is None or isinstance(body_field.field_info, params.Form):
        return  # no JSON body (streamed uploads, forms, GETs)
    try:
        body = await request.json()
    except ValueError:
        return  # not JSON: the route's own validation answers
    path = lone_surrogate_at(body)
    if path is not None:
        raise BadRequest(".".join(path) or "body",
                         "contains a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape); send valid Unicode")

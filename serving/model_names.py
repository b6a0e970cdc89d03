"""Cohere's `model` field -> a domain: how Cohere clients, which expose only `model` and a base URL
(LangChain, LlamaIndex), choose a domain.

- `domain:<id>` always names the domain <id>;
- a name starting with `rerank-` is a Cohere model id (rerank-v3.5, rerank-english-v3.0, ...): it names
  no domain, so `?domain=`, the body's `domain` or the default domain decide;
- any other name must be a domain id and names that domain (a domain whose id starts with `rerank-`
  is reached with the `domain:` form);
- `base:multilingual` names the multilingual base of base routing (serving/base_routing.py), not a
  domain: the domain comes from `?domain=`, `domain` or the default, and that base answers;
- a `model` that names one domain while `?domain=` / `domain` name another is refused (422), never
  resolved by picking one.
"""
from __future__ import annotations

from state.ids import MULTILINGUAL_BASE_ID, InvalidId, validate_domain

DOMAIN_PREFIX = "domain:"
COHERE_PREFIX = "rerank-"


class ModelNameError(ValueError):
    pass


def domain_of(model: str | None) -> str | None:
    """The domain `model` names, or None when it names none (absent, or a Cohere model id)."""
    if model is None or model == MULTILINGUAL_BASE_ID:
        return None
    if model.startswith(DOMAIN_PREFIX):
        name = model[len(DOMAIN_PREFIX):]
    elif model.startswith(COHERE_PREFIX):
        return None
    else:
        name = model
    try:
        return validate_domain(name)
    except InvalidId:
        raise ModelNameError(f"{model!r} is neither a domain id ({DOMAIN_PREFIX}<id> or <id>, see GET /v1/models), "
                             f"a Cohere model id ({COHERE_PREFIX}...) nor {MULTILINGUAL_BASE_ID!r}") from None


def choose_domain(model: str | None, explicit: str | None, default: str) -> str:
    """The request's domain from `model` and the explicit domain (`?domain=`, else the body's `domain`)."""
    named = domain_of(model)
    if named is not None and explicit is not None and named != explicit:
        raise ModelNameError(f"{model!r} names domain {named!r} but ?domain= / the domain field name {explicit!r}: "
                             f"send one of them, or the same domain in both")
    return named or explicit or default

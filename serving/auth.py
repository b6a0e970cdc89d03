"""Admin bearer-token check for routes that change state (push, promote, train, delete)."""
from __future__ import annotations

import hmac

from fastapi import Header, HTTPException, Request


def require_admin(request: Request, authorization: str | None = Header(None)) -> None:
    token = request.app.state.settings.admin_token
    if not token:  # no token configured: admin routes are disabled, not open
        raise HTTPException(403, "admin routes are disabled: set RERANKER_ADMIN_TOKEN to enable them")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(401, "missing or wrong admin token (Authorization: Bearer ...)")

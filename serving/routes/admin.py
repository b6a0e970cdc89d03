"""The admin page at /admin: static HTML + ES modules over the JSON API (serving/admin/), and the
token check its login form calls. Every page file is sent with a Content-Security-Policy that allows
only this origin's scripts, styles and API: no inline script or style, nothing from elsewhere."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from serving.auth import require_admin
from serving.protocol import AdminCheck, errors

PAGE_DIR = Path(__file__).resolve().parent.parent / "admin"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}

router = APIRouter()


@router.get("/admin", include_in_schema=False)
async def admin_page() -> FileResponse:
    return FileResponse(PAGE_DIR / "index.html", headers=HEADERS)


@router.get("/v1/admin/check", response_model=AdminCheck, dependencies=[Depends(require_admin)],
            responses=errors(401, 403), tags=["models"])
async def admin_check() -> AdminCheck:
    """200 when the bearer token is the admin token (the page's login form calls it)."""
    return AdminCheck(admin=True)


class _PageFiles(StaticFiles):
    async def get_response(self, path, scope):  # noqa: ANN001
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/admin/static", _PageFiles(directory=PAGE_DIR), name="admin-static")

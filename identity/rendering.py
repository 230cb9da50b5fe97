"""Where the templates are, and the one Jinja environment the pages are rendered with.

Pages (``web``), the ``/docs`` page (``openapi``) and mail (``mail``) all find the templates
here, so there is one place that knows where they live."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

# templates/ at the top of the repository is the package identity._templates (pyproject.toml
# maps it), so a checkout, an editable install and a wheel all find it the same way. pip
# installs packages as folders, so the resource is a real directory Jinja can read.
TEMPLATES_DIR = Path(str(resources.files("identity._templates")))
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
NO_STORE = {"Cache-Control": "no-store"}

# What base.html reads; a page without a visitor (docs, error pages) gets these.
_PAGE_DEFAULTS: dict[str, Any] = {
    "csrf_token": "",
    "current_user": None,
    "notice": None,
    "errors": {},
    "values": {},
}


def page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    """Render ``template`` as an uncached HTML page."""
    response = templates.TemplateResponse(
        request, template, {**_PAGE_DEFAULTS, **context}, status_code=status
    )
    response.headers.update(NO_STORE)
    return response


def static_files() -> Mount:
    """``/static``: the stylesheet and the page scripts."""
    return Mount("/static", StaticFiles(directory=str(TEMPLATES_DIR / "static")), name="static")

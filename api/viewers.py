"""Browser viewers: the job list page and the tree, response and log-probability viewers, and the API's
interactive documentation at ``/docs``.

Everything the pages need (HTML, ES modules, CSS, the vendored D3 and Swagger UI) is served by the app
itself from ``api/static`` so the viewers and the docs work offline.  ``create_app()`` wires this in with::

    app.include_router(viewers.router)
    viewers.mount_static(app)
"""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Defence in depth on top of the pages never putting model text into HTML: no inline or
# foreign scripts can run, so an injected `<img onerror=...>` would stay inert anyway.
# connect-src allows http(s) so that `?file=URL` can load a tree from another origin.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "connect-src 'self' http: https:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'self'",
    ]
)

# Page -> (its file, its link in the top bar).
PAGES = {
    "index": ("index.html", "jobs"),
    "tree": ("viewer/tree.html", "tree"),
    "response": ("viewer/response.html", "response"),
    "logprobs": ("viewer/logprobs.html", "logprobs"),
    "compare": ("viewer/compare.html", "compare"),
    "study": ("viewer/study.html", "jobs"),
}
# Every page's top bar, written once: pages hold this marker where it goes.
TOPBAR_MARK = "<!-- topbar -->"

router = APIRouter(include_in_schema=False)


@functools.cache
def page_html(name: str) -> str:
    """A page with the shared top bar in place, its own link marked active."""
    file, view = PAGES[name]
    link = f'data-view="{view}"'
    topbar = (STATIC_DIR / "parts" / "topbar.html").read_text().replace(link, f'{link} class="active"')
    return (STATIC_DIR / file).read_text().replace(TOPBAR_MARK, topbar.strip())


def _page(name: str) -> HTMLResponse:
    return HTMLResponse(
        page_html(name),
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )


@router.get("/")
def index_page() -> HTMLResponse:
    """Job list: recent jobs with status and progress, and a form to submit a job."""
    return _page("index")


@router.get("/viewer/tree")
def tree_viewer() -> HTMLResponse:
    """Tree viewer: `?job=ID` or `?file=URL`, or open / drop a tree JSON file."""
    return _page("tree")


@router.get("/viewer/response")
def response_viewer() -> HTMLResponse:
    """Response viewer: the most probable path, with alternatives per token."""
    return _page("response")


@router.get("/viewer/logprobs")
def logprobs_viewer() -> HTMLResponse:
    """Log-probability viewer: one card per JSONL record."""
    return _page("logprobs")


@router.get("/viewer/compare")
def compare_viewer() -> HTMLResponse:
    """Compare page: two trees of one prompt as one tree coloured by side (`?a=ID&b=ID`, or two files)."""
    return _page("compare")


@router.get("/viewer/study")
def study_viewer() -> HTMLResponse:
    """Study page (`?id=ID`): its jobs' progress, its forks ranked, and links to each tree."""
    return _page("study")


# Swagger UI from the npm package swagger-ui-dist (its version in vendor/swagger-ui/VERSION).
SWAGGER_UI = "/static/vendor/swagger-ui"


@router.get("/docs")
def api_docs(request: Request) -> HTMLResponse:
    """The API's interactive documentation: FastAPI's Swagger UI page, with its script and styles served
    from here rather than a CDN."""
    app = request.app
    return get_swagger_ui_html(
        openapi_url=request.scope.get("root_path", "") + app.openapi_url,
        title=f"{app.title} · API",
        swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url="/static/img/favicon.svg",
    )


def mount_static(app: FastAPI) -> None:
    """Serve `api/static` (pages' JS, CSS, vendored D3) at `/static`."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

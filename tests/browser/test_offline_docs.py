"""`/docs` offline: FastAPI's Swagger UI with its script and styles served by the app (api/static/vendor/
swagger-ui), so that with every request beyond the service refused it still lists the API's operations."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_docs_render_with_the_network_closed(browser_page, base_url, screenshot):
    page = browser_page
    refused: list[str] = []

    def only_local(route):
        if route.request.url.startswith(base_url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.context.route("**/*", only_local)
    page.goto(f"{base_url}/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=15_000)
    paths = page.locator(".opblock-summary-path").all_text_contents()
    assert "/v1/jobs" in paths and "/v1/jobs/{job_id}/tree" in paths
    assert page.locator(".swagger-ui .info .title").text_content().startswith("tokentree")
    screenshot(page, "api-docs-offline")
    assert refused == [] and page.log.external_requests == []  # nothing asked beyond the service
    assert page.log.page_errors == []
    # ReDoc would need a CDN as well: it is not served.
    assert page.goto(f"{base_url}/redoc").status == 404

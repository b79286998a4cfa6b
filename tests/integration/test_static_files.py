"""The chat page loads its stylesheets and scripts when daphne is started exactly as the README's
distributed section says (migrate, bootstrap, daphne; no collectstatic)."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.parse
import urllib.request

import pytest

from tests.integration.conftest import Platform

pytestmark = pytest.mark.slow


def test_the_chat_page_and_its_static_files_load(platform: Platform) -> None:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login = opener.open(f"{platform.http}/login/", timeout=30).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login)
    assert token is not None
    form = urllib.parse.urlencode(
        {"username": "alice", "password": "alice-password-1", "csrfmiddlewaretoken": token.group(1)}
    ).encode()
    page = opener.open(
        urllib.request.Request(f"{platform.http}/login/", data=form, headers={"Referer": f"{platform.http}/login/"}),
        timeout=30,
    )
    assert page.url == f"{platform.http}/"
    html = page.read().decode()
    assets = sorted(set(re.findall(r'(?:href|src)="(/static/[^"#]+)"', html)))
    assert any(a.endswith(".css") for a in assets) and any(a.endswith(".js") for a in assets), assets
    for asset in assets:
        with opener.open(f"{platform.http}{asset}", timeout=30) as response:
            assert response.status == 200, asset
            assert len(response.read()) > 0, asset
            kind = response.headers["Content-Type"]
            if asset.endswith(".css"):
                assert kind.startswith("text/css"), (asset, kind)
            elif asset.endswith((".js", ".mjs")):
                assert "javascript" in kind, (asset, kind)

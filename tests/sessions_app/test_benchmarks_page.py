"""The benchmarks page is the job dashboard's sibling: the same door (signed in, staff only), a
shell whose script reads the jobs API, reachable from the dashboard's header."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client


def test_a_visitor_who_is_not_signed_in_is_sent_to_sign_in_as_for_the_jobs_page(client: Client, db: None) -> None:
    for page in ("/benchmarks/", "/jobs/"):
        response = client.get(page)
        assert response.status_code == 302
        assert response["Location"] == f"/login/?next={page}"


def test_a_signed_in_user_who_is_not_staff_finds_no_page_as_for_the_jobs_page(client: Client, user: User) -> None:
    client.force_login(user)
    assert client.get("/jobs/").status_code == 404
    response = client.get("/benchmarks/")
    assert response.status_code == 404
    assert b"bench.js" not in response.content


def test_staff_get_the_page_with_its_script_and_a_strict_content_policy(client: Client, staff: User) -> None:
    client.force_login(staff)
    response = client.get("/benchmarks/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "<h1>Benchmarks</h1>" in body
    assert 'src="/static/bench/bench.js"' in body
    assert 'id="bench-list"' in body
    assert 'href="/jobs/"' in body and 'href="/"' in body  # back to Jobs and Chats
    # Benchmark labels and errors are shown on this page: no inline script may run.
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert client.post("/benchmarks/").status_code == 405


def test_the_jobs_page_links_to_the_benchmarks(client: Client, staff: User) -> None:
    client.force_login(staff)
    body = client.get("/jobs/").content.decode()
    assert '<a class="button small" href="/benchmarks/">Benchmarks</a>' in body

"""Who reaches the workers: the page and /api/workers/ are for staff, with the jobs page's door
(sign in first; anyone else finds nothing), and the job dashboard links to the page."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient


def test_a_visitor_who_is_not_signed_in_is_sent_to_sign_in(client: Client, db: None) -> None:
    response = client.get("/workers/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/workers/"


def test_a_signed_in_user_who_is_not_staff_finds_no_page_and_no_api(client: Client, user: User, api: APIClient) -> None:
    client.force_login(user)
    response = client.get("/workers/")
    assert response.status_code == 404 and b"workers.js" not in response.content
    assert api.get("/api/workers/").status_code == 403


def test_staff_get_the_page_with_its_script_and_a_strict_content_policy(client: Client, staff: User) -> None:
    client.force_login(staff)
    response = client.get("/workers/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "<h1>Workers</h1>" in body and 'src="/static/workers/workers.js"' in body
    assert 'id="workers"' in body and 'href="/jobs/"' in body
    assert "every 2 s" in body  # the beat interval, from inference.workers
    # Host names, model paths and task arguments are shown here: no inline script may run.
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert client.post("/workers/").status_code == 405


def test_staff_read_the_embedded_worker_from_the_api(staff_api: APIClient) -> None:
    [worker] = staff_api.get("/api/workers/").json()["results"]
    assert worker["hostname"] == "embedded" and worker["processes"][0]["role"] == "main"
    assert set(worker["models"]) >= {"loaded", "unloaded", "keep_alive_seconds"}


def test_the_jobs_page_links_to_the_workers_page(client: Client, staff: User) -> None:
    client.force_login(staff)
    body = client.get("/jobs/").content.decode()
    assert 'href="/workers/" id="workers-link">Workers</a>' in body

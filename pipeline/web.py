"""The pipeline's staff pages: the job dashboard, the workers' view and the benchmark results.

Each is a shell whose script (``static/jobs/``, ``static/workers/``, ``static/bench/``) reads the
staff API; a user who is not staff gets a 404, as for a page that is not there.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from inference.workers import WORKER_BEAT_SECONDS
from sessions_app.web import with_csp


@with_csp
@login_required
@require_GET
def jobs_page(request: HttpRequest) -> HttpResponse:
    """The model pipeline's dashboard (staff only; others get a 404, as for a page that is not
    there): a shell whose script (``static/jobs/``) reads ``/api/jobs/`` and ``/ws/jobs/``."""
    if not request.user.is_staff:
        raise Http404("No such page.")
    return render(request, "jobs.html", {"flower_url": settings.FLOWER_URL})


@with_csp
@login_required
@require_GET
def workers_page(request: HttpRequest) -> HttpResponse:
    """The workers' operations view (staff only; others get a 404, as for the jobs page): a shell
    whose script (``static/workers/``) reads ``/api/workers/`` every 2 s."""
    if not request.user.is_staff:
        raise Http404("No such page.")
    context = {"flower_url": settings.FLOWER_URL, "beat_seconds": f"{WORKER_BEAT_SECONDS:g}"}
    return render(request, "workers.html", context)


@with_csp
@login_required
@require_GET
def benchmarks_page(request: HttpRequest) -> HttpResponse:
    """The benchmark jobs' results (staff only, like the job dashboard): a shell whose script
    (``static/bench/``) reads ``/api/jobs/?kind=benchmark`` and each job's ``bench.json``."""
    if not request.user.is_staff:
        raise Http404("No such page.")
    return render(request, "benchmarks.html")

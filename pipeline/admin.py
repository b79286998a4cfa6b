from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from inference.models import Job
from pipeline.jobs.services import JobError, job_cancel


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Jobs to look at, cancel and delete, never to write: a job is made by ``job_create`` (checked
    params, its queue) and its row belongs to the runner after that. Every field is read-only and
    there is no add page: a row edited or added here would bypass the checks (a ``log_path`` or
    ``params`` naming any file of the server, a ``status`` no worker set)."""

    list_display = ["id", "kind", "status", "progress", "stage", "created_by", "created_at"]
    list_filter = ["kind", "status"]
    actions = ["cancel_jobs"]

    def get_readonly_fields(self, request: HttpRequest, obj: Job | None = None) -> list[str]:
        # All of them, so a field added to Job later is read-only too.
        return [f.name for f in Job._meta.concrete_fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Cancel the selected jobs", permissions=["change"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        cancelled = 0
        for job in queryset:
            try:
                job_cancel(job)
                cancelled += 1
            except JobError as exc:
                self.message_user(request, exc.message, level=messages.WARNING)
        if cancelled:
            self.message_user(request, f"Asked {cancelled} job(s) to stop.")

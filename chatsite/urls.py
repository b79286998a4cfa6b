from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from agents.apis import AgentViewSet, ToolServerViewSet
from pipeline import apis as pipeline_apis
from sessions_app import apis as session_apis
from sessions_app import sse, token_apis, web
from sessions_app.metrics import MetricsView

router = SimpleRouter()
router.register("agents", AgentViewSet, basename="agent")
router.register("tool-servers", ToolServerViewSet, basename="tool-server")

api_patterns = [
    path("auth/token/", token_apis.LoginApi.as_view(), name="api-token"),
    path("tokens/", token_apis.TokenListApi.as_view(), name="token-list"),
    path("tokens/<int:token_id>/", token_apis.TokenDetailApi.as_view(), name="token-detail"),
    path("", include(router.urls)),
    path("sessions/", session_apis.SessionListApi.as_view(), name="session-list"),
    path("sessions/<int:session_id>/", session_apis.SessionDetailApi.as_view(), name="session-detail"),
    path("sessions/<int:session_id>/messages/", session_apis.MessageListApi.as_view(), name="message-list"),
    path(
        "sessions/<int:session_id>/messages/<int:message_id>/",
        session_apis.MessageDetailApi.as_view(),
        name="message-detail",
    ),
    path(
        "sessions/<int:session_id>/messages/<int:message_id>/stream/",
        sse.message_stream,
        name="message-stream",
    ),
    path(
        "sessions/<int:session_id>/messages/<int:message_id>/pick/",
        session_apis.ReplyPickApi.as_view(),
        name="reply-pick",
    ),
    path("leaderboard/", session_apis.LeaderboardApi.as_view(), name="leaderboard"),
    path("leaderboard/preferences/", session_apis.PreferencesApi.as_view(), name="preferences"),
    path("sessions/<int:session_id>/stop/", session_apis.ReplyStopApi.as_view(), name="reply-stop"),
    path("sessions/<int:session_id>/regenerate/", session_apis.ReplyRegenerateApi.as_view(), name="reply-regenerate"),
    path("jobs/", pipeline_apis.JobListApi.as_view(), name="job-list"),
    path("jobs/kinds/", pipeline_apis.JobKindsApi.as_view(), name="job-kinds"),
    path("jobs/<int:job_id>/", pipeline_apis.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<int:job_id>/cancel/", pipeline_apis.JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<int:job_id>/retry/", pipeline_apis.JobRetryApi.as_view(), name="job-retry"),
    path("jobs/<int:job_id>/log/", pipeline_apis.JobLogApi.as_view(), name="job-log"),
    path("jobs/<int:job_id>/resume/", pipeline_apis.JobResumeApi.as_view(), name="job-resume"),
    path("jobs/<int:job_id>/files/<str:name>", pipeline_apis.JobFileApi.as_view(), name="job-file"),
    path("datasets/", pipeline_apis.DatasetUploadApi.as_view(), name="dataset-upload"),
    path("artifacts/", pipeline_apis.ArtifactListApi.as_view(), name="artifact-list"),
    path("artifacts/<int:artifact_id>/", pipeline_apis.ArtifactDetailApi.as_view(), name="artifact-detail"),
    path("workers/", pipeline_apis.WorkerListApi.as_view(), name="worker-list"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

handler500 = "chatsite.unavailable.handler500"

urlpatterns = [
    path("healthz", web.healthz, name="healthz"),
    path("metrics", MetricsView.as_view(), name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
    path("v1/", include("chatsite.openai_urls")),
    path("", include("chatsite.ui_urls")),
]

if settings.DEBUG:
    from django.conf.urls.static import static

    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)

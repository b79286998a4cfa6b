"""Settings, all read from the environment (see README "Configuration").

With nothing set the platform runs on its embedded default: SQLite, the in-memory channel layer,
replies generated in-process by a bounded thread pool, on the bundled SmolLM2 GGUF.
``DATABASE_URL`` and ``REDIS_URL`` switch to the distributed set-up.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from chatsite.env import (
    env_bool,
    env_database,
    env_float,
    env_int,
    env_list,
    env_path,
    env_proxy_header,
    env_rate,
    env_redis_url,
    env_str,
    redis_channel_prefix,
)
from chatsite.secret_key import secret_key_load

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = env_path("CHATSITE_DATA_DIR", BASE_DIR / "var")

DEBUG = env_bool("DEBUG", False)
# Never a known key: SECRET_KEY from the environment (a deployment with several hosts sets the same
# one everywhere), else a random key made once and kept in the data folder, readable by its owner
# only (chatsite/secret_key.py). A published key lets anyone forge a session cookie.
SECRET_KEY = secret_key_load(
    value=env_str("SECRET_KEY", ""),
    data_dir=DATA_DIR,
    debug=DEBUG,
    required=env_bool("REQUIRE_SECRET_KEY", False),
)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# HTTPS behind a proxy (docs/security.md, "What a deployment must set"). All off by default: the
# embedded default serves plain HTTP on loopback.
SECURE_PROXY_SSL_HEADER = env_proxy_header("SECURE_PROXY_SSL_HEADER")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Probes and scrapers inside the network ask over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "inference",
    "agents",
    "sessions_app",
    "pipeline",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A NUL in the URL's path or query is a 400 before any view looks something up with it.
    "sessions_app.validation.url_text_middleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so that its process_exception sees a view's error first: an outage answers 503.
    "chatsite.unavailable.UnavailableMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env_database("DATABASE_URL", DATA_DIR / "db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_redis_url("REDIS_URL")
EMBEDDED = REDIS_URL is None

CHANNEL_LAYERS: dict[str, dict[str, Any]]
CHANNEL_LAYER_MAX_CONNECTIONS = env_int("CHANNEL_LAYER_MAX_CONNECTIONS", 100, minimum=4)
if EMBEDDED:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
else:
    CHANNEL_LAYERS = {
        "default": {
            # channels_redis's pub/sub layer: one PUBLISH per group send, one subscribed
            # connection per daphne process; its pool waits instead of failing and retries after a
            # Redis restart (sessions_app/channel_layer.py).
            "BACKEND": "sessions_app.channel_layer.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        # An idle subscribed connection is pinged every health_check_interval.
                        "socket_timeout": 30,
                        "socket_connect_timeout": 5,
                        # Connections per daphne process; a command waits up to `timeout` s for
                        # a free one instead of failing (200 handshakes at once: docs/reliability.md).
                        "max_connections": CHANNEL_LAYER_MAX_CONNECTIONS,
                        "timeout": 10,
                        "retries": 3,
                        "health_check_interval": 15,
                    }
                ],
                # Pub/sub channels are one namespace for the whole Redis server, whatever the
                # database number: platforms that share a server on different databases (the
                # tests' two groups do) must not hear each other's groups.
                "prefix": redis_channel_prefix(REDIS_URL),
            },
        }
    }

# --- Celery (distributed set-up) -------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL or "memory://"
# kombu's Redis transport with its close path repaired: without it a worker whose broker restarts
# while a reply is in flight exits with "Unrecoverable error" (chatsite/broker.py says why).
CELERY_BROKER_TRANSPORT = "chatsite.broker:Transport" if REDIS_URL else None
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # safe: every task claims its row with a conditional update
CELERY_TASK_REJECT_ON_WORKER_LOST = False  # a lost reply is reaped as `interrupted`, not rerun
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 600, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 660, minimum=1)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "socket_keepalive": True, "retry_on_timeout": True}
# A broker outage must not end a worker: it reconnects for as long as it takes (the default gives
# up after 100 tries), and a reply being generated goes on and keeps its text (the broker carries
# only the task; the text goes to the database). docs/reliability.md.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# A web request that queues a reply while Redis is away waits about 2 s, then answers 503.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "reap-replies": {"task": "sessions_app.tasks.replies_reap", "schedule": 15.0, "options": {"queue": "default"}},
    "reap-jobs": {"task": "pipeline.tasks.jobs_reap", "schedule": 15.0, "options": {"queue": "default"}},
}

# --- Inference ----------------------------------------------------------------------------------
MODELS_DIR = env_path("MODELS_DIR", DATA_DIR / "models")
# The backends agents may use, by dotted path; each class declares its own name (see
# docs/architecture.md, "Adding a backend"). The first is the default for a new agent.
INFERENCE_BACKENDS = [
    "inference.backends.llama_cpp.LlamaCppBackend",
    "inference.backends.openvino.OpenVINOBackend",
    "inference.backends.openai_compat.OpenAICompatBackend",
    "inference.backends.vllm.VLLMBackend",
]
# Loaded models stay in a worker process's memory, bounded in bytes and unloaded when idle.
MODEL_CACHE_MAX_BYTES = env_int("MODEL_CACHE_MAX_BYTES", 4 * 1024**3, minimum=0)
MODEL_CACHE_IDLE_SECONDS = env_int("MODEL_CACHE_IDLE_SECONDS", 900, minimum=1)
# A worker loads the models of the agents on its queues when it starts (a vLLM engine takes minutes).
PRELOAD_MODELS = env_bool("PRELOAD_MODELS", True)
# Embedded default: replies run in this many in-process threads.
EMBEDDED_REPLY_THREADS = env_int("EMBEDDED_REPLY_THREADS", 2, minimum=1, maximum=64)
# Streaming: broadcast at most one delta per this many ms per reply, save partial text this often.
REPLY_BROADCAST_INTERVAL_MS = env_int("REPLY_BROADCAST_INTERVAL_MS", 50, minimum=1)
REPLY_SAVE_INTERVAL_MS = env_int("REPLY_SAVE_INTERVAL_MS", 500, minimum=50)
REPLY_STOP_POLL_MS = env_int("REPLY_STOP_POLL_MS", 100, minimum=10)
# A worker renews the heartbeat of the replies it generates this often (at most a third of the
# stale limit), from the claim on, model loads and slow first tokens included; a `streaming`
# reply whose heartbeat is older than REPLY_STALE_SECONDS lost its worker and is `interrupted`.
REPLY_HEARTBEAT_SECONDS = env_float("REPLY_HEARTBEAT_SECONDS", 5.0, minimum=0.2)
REPLY_STALE_SECONDS = env_int("REPLY_STALE_SECONDS", 60, minimum=1)
# A hard cap on the replies one user message gets in a multi-agent session (sessions_app.turns).
MULTI_AGENT_MAX_TURNS = env_int("MULTI_AGENT_MAX_TURNS", 12, minimum=1, maximum=100)
# The longest an ask_agent call waits for the consulted agent's answer (sessions_app.consult);
# past it the consultation is stopped and the asking model reads the timeout as the tool's error.
ASK_AGENT_TIMEOUT_SECONDS = env_float("ASK_AGENT_TIMEOUT_SECONDS", 180.0, minimum=1.0)
# How long a worker retries the final write of a reply while the database is away (the text
# waits in the live buffer meanwhile; past this the reaper ends the reply `interrupted`).
REPLY_DB_RETRY_SECONDS = env_float("REPLY_DB_RETRY_SECONDS", 60.0, minimum=0)
# A client following a reply (websocket, SSE, /v1, terminal) that hears nothing for this long
# reads the reply's state from the database: a lost event never leaves it waiting.
REPLY_FOLLOW_CHECK_SECONDS = env_float("REPLY_FOLLOW_CHECK_SECONDS", 2.0, minimum=0.1)
# --- Model pipeline jobs (pipeline.jobs, docs/jobs.md) ----------------------------------------
# Where jobs write the artifacts they make (a volume every worker that serves them can read).
ARTIFACT_ROOT = env_path("CHATSITE_ARTIFACT_ROOT", DATA_DIR / "artifacts")
# A running job renews its heartbeat this often; one silent for JOB_STALE_SECONDS lost its worker.
JOB_HEARTBEAT_SECONDS = env_float("JOB_HEARTBEAT_SECONDS", 5.0, minimum=0.2)
JOB_STALE_SECONDS = env_int("JOB_STALE_SECONDS", 30, minimum=1)
JOB_CANCEL_POLL_SECONDS = env_float("JOB_CANCEL_POLL_SECONDS", 1.0, minimum=0.05)
JOB_KILL_GRACE_SECONDS = env_float("JOB_KILL_GRACE_SECONDS", 5.0, minimum=0)
# The largest JSONL dataset POST /api/datasets/ takes.
DATASET_MAX_BYTES = env_int("DATASET_MAX_BYTES", 200 * 1024 * 1024, minimum=1024)
# Jobs that ask for a GPU (finetune_lora with device=cuda) go to this queue: run a worker there with -Q jobs-gpu.
JOB_GPU_QUEUE = env_str("JOB_GPU_QUEUE", "jobs-gpu")
JOB_TIME_LIMIT_SECONDS = env_int("JOB_TIME_LIMIT_SECONDS", 48 * 3600, minimum=60)
# The Python of each environment a job step runs in (tools whose pins conflict get their own).
JOB_PYTHONS = {
    "main": env_str("JOB_PYTHON", sys.executable),
    "gptq": env_str("JOB_PYTHON_GPTQ", str(BASE_DIR / ".venv-gptq" / "bin" / "python")),
}
# The dashboard links to Flower (docker-compose runs it behind basic auth) when this is set.
FLOWER_URL = env_str("FLOWER_URL", "")
# Log each hop of a reply's way to its first byte (sessions_app.trace; tools/profile_first_token).
FIRST_TOKEN_TRACE = env_bool("FIRST_TOKEN_TRACE", False)
# Where a benchmark job reaches the platform's own doors (/v1, the websocket) from a worker.
PLATFORM_URL = env_str("PLATFORM_URL", "http://127.0.0.1:8000").rstrip("/")
# GET /metrics (Prometheus) is for staff, or for a scraper sending "Authorization: Bearer <this>".
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
MESSAGE_MAX_CHARS = env_int("MESSAGE_MAX_CHARS", 32000, minimum=1)
DEFAULT_AGENT_SLUG = env_str("DEFAULT_AGENT_SLUG", "assistant")
WEBSOCKET_ALLOWED_ORIGINS = env_list("WEBSOCKET_ALLOWED_ORIGINS", [])
OPENAI_COMPAT_TIMEOUT = env_float("OPENAI_COMPAT_TIMEOUT", 120.0, minimum=1.0)
# Hosts an agent's base_url may name (inference.outbound): host names, *.domain, IPs, CIDR ranges,
# or *. Empty: any host but link-local and cloud metadata addresses, which only a listed IP or range allows.
OUTBOUND_ALLOWED_HOSTS = env_list("OUTBOUND_ALLOWED_HOSTS", [])

# --- REST API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # DRF's parsers, refusing a NUL or a lone surrogate anywhere in a body (400 naming the field).
    "DEFAULT_PARSER_CLASSES": [
        "sessions_app.validation.JSONParser",
        "sessions_app.validation.FormParser",
        "sessions_app.validation.MultiPartParser",
    ],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "sessions_app.tokens.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "chatsite.api_errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["sessions_app.throttling.UserThrottle"],  # open while Redis is away
    "DEFAULT_THROTTLE_RATES": {
        "user": env_rate("API_RATE_LIMIT", "600/minute"),
        "anon": env_rate("API_ANON_RATE_LIMIT", "30/minute"),
    },
}

# Rate-limit counters live in Redis when there is one, so every daphne process shares them.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
        if EMBEDDED
        # Django's Redis cache, its connections shared by the request threads (chatsite/cache.py).
        else {"BACKEND": "chatsite.cache.SharedRedisCache", "LOCATION": REDIS_URL or ""}
    )
}
SPECTACULAR_SETTINGS = {
    "TITLE": "chatsite API",
    "DESCRIPTION": "Agents, sessions and messages of the self-hosted multi-agent chat platform.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "sessions_app.openai.schema.add_openai_paths",
    ],
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env_path("STATIC_ROOT", DATA_DIR / "static")
# whitenoise serves STATIC_ROOT (filled by collectstatic: make run, the docker image) and, for a
# file not collected there, the file from the project's own static folders, so a daphne started
# after only migrate + bootstrap (the README's distributed commands) still serves its page whole.
WHITENOISE_USE_FINDERS = True
MEDIA_URL = "media/"
MEDIA_ROOT = env_path("MEDIA_ROOT", DATA_DIR / "media")
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2 * 1024 * 1024, minimum=1024)

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}

for _folder in (DATA_DIR, STATIC_ROOT, MEDIA_ROOT, ARTIFACT_ROOT):
    _folder.mkdir(parents=True, exist_ok=True)

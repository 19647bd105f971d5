"""The only settings file: everything an operator changes comes from the environment.

Defaults run on SQLite with no environment at all. See README "Configuration".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dj_database_url
from dotenv import load_dotenv

from project.env import (
    ConfigError,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_optional_int,
    env_str,
    secret_from_file,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# A `.env` in the root is read, but real environment variables win.
load_dotenv(BASE_DIR / ".env", override=False)
VAR_DIR = Path(env_str("VAR_DIR") or BASE_DIR / "var")

SECRET_KEY = env_str("DJANGO_SECRET_KEY") or secret_from_file(
    VAR_DIR / "secret_key", generate="django"
)
# Fernet keys for upstream tokens at rest; the first encrypts, all decrypt (rotation).
TOKEN_ENCRYPTION_KEYS = env_list("TOKEN_ENCRYPTION_KEY") or [
    secret_from_file(VAR_DIR / "token_key", generate="fernet")
]

DEBUG = env_bool("DEBUG")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "accounts",
    "gateway",
]

# The portal and the admin get Django's usual stack. `/v1` is served by its own handler
# (project/asgi.py) with only API_MIDDLEWARE: every sync middleware costs thread hops there.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
API_MIDDLEWARE = [
    "gateway.middleware.ApiMiddleware",
    "corsheaders.middleware.CorsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

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


def _database(url: str) -> dict[str, Any]:
    config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=0))
    # Persistent connections leak under ASGI's per-request threads: never keep them.
    config["CONN_MAX_AGE"] = 0
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["OPTIONS"] = {
            # SQLite's own page cache stays at its 2 MB default: a larger one (or mapped
            # reads) grows the resident set with the ledger, and the file's pages are in the
            # operating system's cache anyway.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
        config["TEST"] = {"NAME": str(VAR_DIR / "test_db.sqlite3")}
    elif config["ENGINE"] == "django.db.backends.postgresql":
        config["OPTIONS"] = {
            "pool": {
                "min_size": 2,
                "max_size": env_int("DATABASE_POOL_SIZE", 40, minimum=2),
                "timeout": 10,
            }
        }
    return config


DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
DATABASES = {"default": _database(DATABASE_URL)}
# Threads that run the API's database steps, each keeping one connection open
# (accounts/db_thread.py); PostgreSQL's pool must hold them and the portal's requests.
# SQLite takes one writer at a time, and a writer that finds it busy sleeps a millisecond
# or more: one thread per process queues its steps instead.
_SQLITE = DATABASES["default"]["ENGINE"].endswith("sqlite3")
DB_THREADS = env_int("DB_THREADS", 1 if _SQLITE else 4, minimum=1)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
# Namespace of the gateway's keys in Redis, so that deployments can share a server.
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "pg")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_KEY_PREFIX,
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or BASE_DIR / "staticfiles")
STATICFILES_DIRS = [
    BASE_DIR / "static",
    # Chart.js as `npm ci` installed it (package-lock.json): served, never copied into the repo.
    ("vendor/chart.js", BASE_DIR / "node_modules" / "chart.js" / "dist"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

X_FRAME_OPTIONS = "DENY"

# Production behind TLS: HTTPS=true turns every one of these on (`check --deploy` is then
# clean); each can still be set on its own. Off by default so http://127.0.0.1 works.
# The portal and admin are redirected; /v1 and the probes (lean handler) are not: a key
# already sent in clear is not saved by a redirect, so serve /v1 on HTTPS only.
HTTPS = env_bool("HTTPS")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", HTTPS)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", HTTPS)

# --- the gateway -------------------------------------------------------------------------

MAX_REQUEST_BYTES = env_int("MAX_REQUEST_BYTES", 32 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES

PUTER_API_BASE = env_str("PUTER_API_BASE", "https://api.puter.com").rstrip("/")
PUTER_TOKENS = env_list("PUTER_TOKENS")
PUTER_EXTRA_HEADERS = env_str("PUTER_EXTRA_HEADERS")  # JSON object; checked by gateway.E002

UPSTREAM_CONNECT_TIMEOUT = env_float("UPSTREAM_CONNECT_TIMEOUT", 10.0)
UPSTREAM_READ_TIMEOUT = env_float("UPSTREAM_READ_TIMEOUT", 120.0)
UPSTREAM_MAX_TRIES = env_int("UPSTREAM_MAX_TRIES", 3, minimum=1)
UPSTREAM_FAILURES_TO_COOL = env_int("UPSTREAM_FAILURES_TO_COOL", 3, minimum=1)
UPSTREAM_COOLDOWN = env_float("UPSTREAM_COOLDOWN", 30.0)
UPSTREAM_QUEUE_TIMEOUT = env_float("UPSTREAM_QUEUE_TIMEOUT", 30.0)
# Seconds between the server's probe rounds (0 turns the prober off), and one probe's limit.
UPSTREAM_PROBE_INTERVAL = env_float("UPSTREAM_PROBE_INTERVAL", 30.0)
UPSTREAM_PROBE_TIMEOUT = env_float("UPSTREAM_PROBE_TIMEOUT", 15.0, minimum=0.1)
MODELS_CACHE_SECONDS = env_float("MODELS_CACHE_SECONDS", 600.0)
# How long a key's or an upstream's settings may be served from memory (DESIGN: 5 s).
SETTINGS_CACHE_SECONDS = env_float("SETTINGS_CACHE_SECONDS", 5.0)
# Failed authentications one client address may make in a minute before it gets 429s.
AUTH_FAILURES_PER_MINUTE = env_int("AUTH_FAILURES_PER_MINUTE", 20)
# `/metrics` answers only when this is set, and only to `Authorization: Bearer <it>`.
METRICS_TOKEN = env_str("METRICS_TOKEN")

# Media: image `url`s are gateway URLs that stop working after MEDIA_URL_TTL seconds; video
# calls wait minutes for Puter (UPSTREAM_VIDEO_TIMEOUT) and run as jobs, a few per process.
PUBLIC_BASE_URL = env_str("PUBLIC_BASE_URL").rstrip("/")
MEDIA_URL_TTL = env_float("MEDIA_URL_TTL", 3600.0, minimum=1.0)
UPSTREAM_VIDEO_TIMEOUT = env_float("UPSTREAM_VIDEO_TIMEOUT", 900.0, minimum=1.0)
VIDEO_DEFAULT_MODEL = env_str("VIDEO_DEFAULT_MODEL")
VIDEO_JOBS_PER_PROCESS = env_int("VIDEO_JOBS_PER_PROCESS", 2, minimum=1)

# --- the portal --------------------------------------------------------------------------

# Keys people make for themselves: each limit below is the default and the most a portal key
# may ask for (0 means no cap). How many keys a user holds is capped per user (UserLimits).
PORTAL_KEY_RPM = env_int("PORTAL_KEY_RPM", 60)
PORTAL_KEY_TPM = env_int("PORTAL_KEY_TPM", 0)
PORTAL_KEY_CONCURRENCY = env_int("PORTAL_KEY_CONCURRENCY", 4)
PORTAL_KEY_BUDGET_TOKENS = env_int("PORTAL_KEY_BUDGET_TOKENS", 0)
PORTAL_KEY_BUDGET_PERIOD = env_str("PORTAL_KEY_BUDGET_PERIOD", "month")
if PORTAL_KEY_BUDGET_PERIOD not in {"none", "day", "month"}:
    raise ConfigError(
        f"PORTAL_KEY_BUDGET_PERIOD must be none, day or month, not {PORTAL_KEY_BUDGET_PERIOD!r}"
    )
PORTAL_ROTATION_GRACE_MINUTES = env_int("PORTAL_ROTATION_GRACE_MINUTES", 60)

# Limits a new key gets when whoever issues it names none (unset: no such limit).
KEY_DEFAULT_RPM = env_optional_int("KEY_DEFAULT_RPM", minimum=1)
KEY_DEFAULT_TPM = env_optional_int("KEY_DEFAULT_TPM", minimum=1)
KEY_DEFAULT_CONCURRENCY = env_optional_int("KEY_DEFAULT_CONCURRENCY", minimum=1)
KEY_DEFAULT_TOKEN_BUDGET = env_optional_int("KEY_DEFAULT_TOKEN_BUDGET", minimum=1)
KEY_DEFAULT_BUDGET_PERIOD = env_str("KEY_DEFAULT_BUDGET_PERIOD", "none")

ADMIN_USERNAME = env_str("ADMIN_USERNAME", "admin")
ADMIN_PASSWORD = env_str("ADMIN_PASSWORD")

_cors_origins = env_list("CORS_ALLOWED_ORIGINS", "*")
CORS_ALLOW_ALL_ORIGINS = _cors_origins == ["*"]
CORS_ALLOWED_ORIGINS = [] if CORS_ALLOW_ALL_ORIGINS else _cors_origins
CORS_URLS_REGEX = r"^/v1(/.*)?$"
CORS_ALLOW_HEADERS = [
    "accept",
    "authorization",
    "content-type",
    "user-agent",
    "x-api-key",
    "x-request-id",
    "openai-organization",
    "openai-project",
    "x-stainless-arch",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
]
CORS_EXPOSE_HEADERS = [
    "x-request-id",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "retry-after",
]

LOG_FORMAT = env_str("LOG_FORMAT") or ("text" if DEBUG else "json")
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "gateway.logs.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "gateway.logs.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Uvicorn's access log repeats the gateway's own request line without the request id.
        "uvicorn.access": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}

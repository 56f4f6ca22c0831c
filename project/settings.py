"""Django settings, read from the environment in this one place.

Every variable is optional. With none set the project runs on embedded defaults: a SQLite
file and two bucket folders under ``var/``, a CDN backend that records invalidations in a
local file, and Celery tasks run in-process. Setting the variables switches each part to
the real service (see the README's configuration table).
"""

from __future__ import annotations

from pathlib import Path

import environ
from botocore.config import Config

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("PIPELINE_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="insecure-dev-key-set-DJANGO_SECRET_KEY")
DEBUG = env.bool("DJANGO_DEBUG", default=True)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "pipeline",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's static files under gunicorn (docker compose) without a web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# --- Database -------------------------------------------------------------------------
# SQLite runs in WAL mode with IMMEDIATE transactions so that a worker process and the
# web process can write the same file without "database is locked" surprises.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Tests need a file (not :memory:) so the real worker process can open it too.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
# Keep connections between requests and tasks (reconnecting per task was measurable).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_URL = "/media/"

# --- Buckets --------------------------------------------------------------------------
# "primary" holds pristine originals (private); "public" holds what the CDN serves.
PRIMARY_BUCKET = env.str("PIPELINE_PRIMARY_BUCKET", default="")
PUBLIC_BUCKET = env.str("PIPELINE_PUBLIC_BUCKET", default="")
PUBLIC_DOMAIN = env.str("PIPELINE_PUBLIC_DOMAIN", default="")
AWS_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default="") or None
AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="us-east-1")
# boto3 reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment itself;
# they are never copied into settings, so they cannot leak through a settings dump.

_s3_common = {
    "region_name": AWS_S3_REGION_NAME,
    "endpoint_url": AWS_S3_ENDPOINT_URL,
    "file_overwrite": True,  # keys are deterministic: a re-run overwrites, never renames
    "max_memory_size": 8 * 1024 * 1024,
    # One client is shared by the threads of a transfer (bulk migration uploads): give it
    # as many pooled connections as threads. Short timeouts so an outage surfaces as a
    # retryable error instead of a hung worker. Emulators (moto, MinIO) are addressed by
    # path, AWS by virtual host.
    "client_config": Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if AWS_S3_ENDPOINT_URL else "virtual"},
        max_pool_connections=env.int("AWS_S3_MAX_POOL_CONNECTIONS", default=32),
        # A server that accepts connections and never answers is an outage too: bounded
        # waits make it a retried error instead of a hung task.
        connect_timeout=env.float("AWS_S3_CONNECT_TIMEOUT", default=5),
        read_timeout=env.float("AWS_S3_READ_TIMEOUT", default=30),
        retries={"mode": "standard", "max_attempts": 3},
        # ContentMD5 already guards every PUT; skip botocore's extra CRC32 pass (measured:
        # a visible share of a worker's CPU per upload).
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    ),
}
if PRIMARY_BUCKET and PUBLIC_BUCKET:
    STORAGES = {
        "primary": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                **_s3_common,
                "bucket_name": PRIMARY_BUCKET,
                "default_acl": "private",
                "querystring_auth": True,  # private objects: only signed, expiring URLs
                "querystring_expire": 300,
            },
        },
        "public": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                **_s3_common,
                "bucket_name": PUBLIC_BUCKET,
                "default_acl": None,  # the bucket policy / CDN origin access decides
                "querystring_auth": False,
                "custom_domain": PUBLIC_DOMAIN or None,
                # "http:" for a local MinIO serving the public bucket without TLS.
                "url_protocol": env.str("PIPELINE_PUBLIC_URL_PROTOCOL", default="https:"),
            },
        },
    }
else:
    STORAGES = {
        "primary": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": VAR_DIR / "buckets/primary", "allow_overwrite": True},
        },
        "public": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {
                "location": VAR_DIR / "buckets/public",
                "base_url": "/cdn/",
                "allow_overwrite": True,
            },
        },
    }
STORAGES["default"] = STORAGES["primary"]
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

# --- Pipeline -------------------------------------------------------------------------
CLOUDFRONT_DISTRIBUTION_ID = env.str("CLOUDFRONT_DISTRIBUTION_ID", default="")
AWS_CLOUDFRONT_ENDPOINT_URL = env.str("AWS_CLOUDFRONT_ENDPOINT_URL", default="") or None

PIPELINE = {
    # How long work waits and retries (pipeline/conf.py explains each); from the
    # environment so that an operator, or a fault test, can tighten them.
    **{
        key: env.int(f"PIPELINE_{key}")
        for key in ("STALE_AFTER", "LEASE", "RETRY_WINDOW", "RETRY_BACKOFF_MAX", "MAX_ATTEMPTS")
        if f"PIPELINE_{key}" in env
    },
    "PROFILES": {
        "default": {},
        "product": {"widths": [320, 640, 1024], "aspect": [4, 3]},
    },
    "CDN": (
        {
            "BACKEND": "pipeline.cdn.backends.CloudFrontBackend",
            "OPTIONS": {
                "DISTRIBUTION_ID": CLOUDFRONT_DISTRIBUTION_ID,
                "ENDPOINT_URL": AWS_CLOUDFRONT_ENDPOINT_URL,
            },
        }
        if CLOUDFRONT_DISTRIBUTION_ID
        else {
            "BACKEND": "pipeline.cdn.backends.LocalRecorderBackend",
            "OPTIONS": {"PATH": str(VAR_DIR / "cdn-invalidations.jsonl")},
        }
    ),
}

# --- Celery ---------------------------------------------------------------------------
# Without a broker URL tasks run in-process (workers/celery.py logs it).
# CELERY_BROKER_URL overrides it for another broker Celery supports (e.g. sqs://).
REDIS_URL = env.str("REDIS_URL", default="")
BROKER_URL = env.str("CELERY_BROKER_URL", default="") or REDIS_URL
CELERY_BROKER_URL = BROKER_URL or "memory://localhost/"
CELERY_TASK_ALWAYS_EAGER = not BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = 7 * 24 * 3600  # celery.backend_cleanup (beat) deletes older rows
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE
# Idempotent tasks are acknowledged after they finish and re-queued if their process
# dies, so a crash never loses work; one message at a time per process keeps long
# renders from starving behind each other.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_TIME_LIMIT = 300
# The row's own status says "processing"; a STARTED result write per task is pure overhead.
CELERY_TASK_TRACK_STARTED = False
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A broker that is down when a save commits: give up publishing after about a second
# (the save already happened; the sweep publishes the row once the broker is back).
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 0.5,
}
# Longer than any retry countdown (RETRY_BACKOFF_MAX) plus the hard time limit, so a
# delayed retry is never redelivered to a second worker while it waits.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Queues, routes and the beat schedule (the pipeline's sweeps and CDN flush/poll) come
# from the app itself: workers/celery.py applies pipeline.celery_config().

# --- Logging --------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "pipeline": {"level": LOG_LEVEL},
        "workers": {"level": LOG_LEVEL},
        # In-process (no broker) a line per task success is noise; workers keep it.
        "celery": {"level": "INFO" if BROKER_URL else "WARNING"},
        # botocore logs request bodies and signatures at DEBUG: keep it quiet.
        "botocore": {"level": "WARNING"},
    },
}

"""FGAM Studio settings: the one place configuration is read.

Every value comes from the environment through ``webapp.env``; a bad value stops start-up
with an error naming the variable. Defaults give the zero-setup quick start: SQLite in
``var/``, Celery tasks run in-process, media in ``var/media``.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from webapp.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_optional_float,
    env_rate,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("FGAM_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off (set DEBUG=1 locally)")
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "webapp.core",
    "webapp.jobs",
    "webapp.catalog",
    "webapp.regions",
    "webapp.exports",
    "webapp.trajectories",
    "webapp.evaluation",
    "webapp.probes",
    "webapp.benchmarks",
    "webapp.studies",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Login and the policy are checked before the CSRF check, which reads a POST body: a refused
    # upload is answered before anything parses it (see webapp.core.policy).
    "webapp.core.middleware.LoginRequiredMiddleware",
    "webapp.core.middleware.PolicyMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

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
    }
]

# --- Database ---------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'fgam.sqlite3'}")
try:
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL={DATABASE_URL!r} is not usable: {exc}") from exc
if _db["ENGINE"] not in ("django.db.backends.postgresql", "django.db.backends.sqlite3"):
    raise ImproperlyConfigured(
        f"DATABASE_URL={DATABASE_URL!r}: only postgres:// and sqlite:/// are supported"
    )
if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    _db["CONN_MAX_AGE"] = 0
    Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth -------------------------------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "catalog:dataset_list"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- Static and media -------------------------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))

# Image bytes, thumbnails and exports go through Django's storage API. Set FGAM_S3_BUCKET to use
# S3 (or any S3-compatible store through AWS_S3_ENDPOINT_URL) instead of MEDIA_ROOT.
FGAM_S3_BUCKET = env_str("FGAM_S3_BUCKET")
if FGAM_S3_BUCKET:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": FGAM_S3_BUCKET,
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL") or None,
            "region_name": env_str("AWS_S3_REGION_NAME") or None,
            "location": env_str("FGAM_S3_PREFIX"),
            "file_overwrite": False,
            "querystring_expire": env_int("FGAM_S3_URL_EXPIRE", 3600, minimum=1),
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# --- REST API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "webapp.core.permissions.SessionAuthentication",
    ],
    # Every view names its resource in the policy table (webapp.core.policy); none is open.
    "DEFAULT_PERMISSION_CLASSES": ["webapp.core.permissions.PolicyPermission"],
    "DEFAULT_METADATA_CLASS": "webapp.core.api.RouteMetadata",
    # Logging in and trading a password for a token, per client address.
    "DEFAULT_THROTTLE_RATES": {
        "login": env_rate("FGAM_THROTTLE_LOGIN", "10/min"),
        "token": env_rate("FGAM_THROTTLE_TOKEN", "10/min"),
    },
    "DEFAULT_PAGINATION_CLASS": "webapp.core.pagination.IdCursorPagination",
    "PAGE_SIZE": env_int("FGAM_API_PAGE_SIZE", 100, minimum=1),
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "FGAM Studio API",
    "DESCRIPTION": "Datasets, images, regions and runs of FGAM Studio.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # drf-spectacular serves the schema to anyone by default; like every page, it needs a login.
    "SERVE_PERMISSIONS": ["webapp.core.permissions.PolicyPermission"],
    # Two models have a field called "status": name their enums instead of "Status398Enum".
    "ENUM_NAME_OVERRIDES": {
        "RegionStatusEnum": "webapp.regions.models.Region.Status",
        "RunStatusEnum": "webapp.jobs.models.Run.Status",
        "RunKindEnum": "webapp.jobs.models.Run.Kind",
        "StartableRunKindEnum": "webapp.jobs.api.STARTABLE_KINDS",
        "VersionStatusEnum": "webapp.exports.models.DatasetVersion.Status",
        "TrainingJobStatusEnum": "webapp.exports.models.TrainingJob.Status",
        "TrainingJobKindEnum": "webapp.exports.models.TrainingJob.Kind",
        "BenchmarkStatusEnum": "webapp.benchmarks.models.BenchmarkJob.Status",
        "ProbeSetStatusEnum": "webapp.probes.models.ProbeSet.Status",
        "ProbeSetKindEnum": "webapp.probes.models.ProbeSet.Kind",
        "ProbeSetSplitEnum": "webapp.probes.models.ProbeSet.Split",
        "TrajectoryStatusEnum": "webapp.trajectories.models.Trajectory.Status",
        "ErrorTypeEnum": "training.formats.ERROR_TYPES",
    },
}

# --- Celery -----------------------------------------------------------------------------------
# Without a broker every task runs in-process, eagerly, through the same task code.
CELERY_TASK_ALWAYS_EAGER = not env_str("CELERY_BROKER_URL")
# The in-memory transport stands in for a broker that eager mode never talks to.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "memory://localhost/"
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or None
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 1, minimum=1)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis hands an unacknowledged task (acks_late) to another worker after this many seconds, so
# a task whose worker died is run again. It must exceed the longest task time limit (the batch
# tasks stop at 1 hour), or a slow task would be started twice while still running.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 7200, minimum=1)
}

# --- FGAM: data, models and endpoints ---------------------------------------------------------
FGAM_THUMBNAIL_SIZE = env_int("FGAM_THUMBNAIL_SIZE", 256, minimum=16)
# Images per thumbnail-and-probe task.
FGAM_THUMBNAIL_BATCH_SIZE = env_int("FGAM_THUMBNAIL_BATCH_SIZE", 200, minimum=1)
# Images with more pixels than this are refused as decompression bombs.
FGAM_MAX_IMAGE_PIXELS = env_int("FGAM_MAX_IMAGE_PIXELS", 178_956_970, minimum=1)
# Imported boxes that overlap their image are clipped to it (Visual Genome's spill by hundreds
# of pixels). Unset or "none" clips whatever overlaps; a number is strict: a box spilling more
# than that many pixels is an error.
FGAM_BOX_CLIP_TOLERANCE = env_optional_float("FGAM_BOX_CLIP_TOLERANCE", minimum=0.0)
FGAM_IMPORT_BATCH_SIZE = env_int("FGAM_IMPORT_BATCH_SIZE", 5000, minimum=1)

FGAM_DETECTOR_MODEL = env_str("FGAM_DETECTOR_MODEL", "IDEA-Research/grounding-dino-tiny")
FGAM_DETECTOR_BACKEND = env_choice(
    "FGAM_DETECTOR_BACKEND", "transformers", ("transformers", "groundingdino-py")
)
FGAM_DEVICE = env_str("FGAM_DEVICE", "auto")
FGAM_DTYPE = env_choice("FGAM_DTYPE", "auto", ("auto", "float32", "float16", "bfloat16"))
FGAM_BOX_THRESHOLD = env_float("FGAM_BOX_THRESHOLD", 0.35, minimum=0.0)
FGAM_TEXT_THRESHOLD = env_float("FGAM_TEXT_THRESHOLD", 0.25, minimum=0.0)
FGAM_LLM_BASE_URL = env_str("FGAM_LLM_BASE_URL", "http://127.0.0.1:8001/v1")
FGAM_LLM_API_KEY = env_str("FGAM_LLM_API_KEY", "not-needed")
FGAM_LLM_MODEL = env_str("FGAM_LLM_MODEL", "Qwen/Qwen2.5-7B-Instruct")
FGAM_LLM_TIMEOUT = env_float("FGAM_LLM_TIMEOUT", 60.0, minimum=0.1)
FGAM_MLLM_MODEL = env_str("FGAM_MLLM_MODEL", "llava-hf/llava-1.5-7b-hf")
FGAM_RM_MODEL = env_str("FGAM_RM_MODEL", "Qwen/Qwen2.5-3B-Instruct")
FGAM_CLIP_MODEL = env_str("FGAM_CLIP_MODEL", "openai/clip-vit-large-patch14-336")
# LLM prices per 1,000 tokens, for the cost shown on caption runs; unset means no cost shown.
_NO_PRICE: float | None = None
FGAM_LLM_PRICE_PROMPT_PER_1K = env_float("FGAM_LLM_PRICE_PROMPT_PER_1K", _NO_PRICE, minimum=0.0)
FGAM_LLM_PRICE_COMPLETION_PER_1K = env_float(
    "FGAM_LLM_PRICE_COMPLETION_PER_1K", _NO_PRICE, minimum=0.0
)
# Pseudo-label and caption runs: batches handed to Celery at once per run. Each finished batch
# hands over the next, so millions of images never sit in the broker; raise it above the number
# of worker processes that serve the run.
FGAM_RUN_WINDOW = env_int("FGAM_RUN_WINDOW", 64, minimum=1)
FGAM_LEASE_SECONDS = env_int("FGAM_LEASE_SECONDS", 900, minimum=1)
# Dataset versions: storage prefix, shard size, rows per cursor fetch, where a version is
# assembled before it moves into place; training job folders; outgoing webhooks.
FGAM_VERSIONS_PREFIX = env_str("FGAM_VERSIONS_PREFIX", "versions")
FGAM_EXPORT_SHARD_BYTES = env_int("FGAM_EXPORT_SHARD_BYTES", 1 << 30, minimum=1)
FGAM_EXPORT_CHUNK_SIZE = env_int("FGAM_EXPORT_CHUNK_SIZE", 10_000, minimum=1)
FGAM_EXPORT_TMP_DIR = env_str("FGAM_EXPORT_TMP_DIR", str(VAR_DIR / "export-tmp"))
FGAM_TRAINING_DIR = env_str("FGAM_TRAINING_DIR", str(VAR_DIR / "training"))
# Benchmark runs (python -m training bench): predictions.jsonl, metrics.json, log.txt.
FGAM_BENCHMARK_DIR = env_str("FGAM_BENCHMARK_DIR", str(VAR_DIR / "benchmarks"))
# Probe sets (webapp.probes): local folders, since the scorer reads one.
FGAM_PROBES_DIR = env_str("FGAM_PROBES_DIR", str(VAR_DIR / "probes"))
FGAM_WEBHOOK_TIMEOUT = env_float("FGAM_WEBHOOK_TIMEOUT", 10.0, minimum=0.1)
FGAM_WEBHOOK_MAX_ATTEMPTS = env_int("FGAM_WEBHOOK_MAX_ATTEMPTS", 6, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)

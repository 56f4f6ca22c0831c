"""The pipeline's settings: every default in one place, validated once.

Projects configure the pipeline with one dict, ``settings.PIPELINE``. Anything not given
takes the default below; a key we do not know raises ``ImproperlyConfigured`` (a typo
must not silently fall back to a default). Code reads settings through
``pipeline_settings()``, never ``getattr(settings, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from pipeline.errors import ProfileError

if TYPE_CHECKING:
    from pipeline.imaging import Profile

DEFAULTS: dict[str, Any] = {
    # Named profiles; each is a dict of overrides of the imaging defaults
    # (see pipeline.imaging.profile_from_dict for the keys).
    "PROFILES": {"default": {}},
    "DEFAULT_PROFILE": "default",
    # STORAGES aliases of the two buckets.
    "PRIMARY_STORAGE": "primary",
    "PUBLIC_STORAGE": "public",
    # Top-level folder of every public key, e.g. "media/demo-photo/..."
    "KEY_PREFIX": "media",
    # Browsers keep a day; the CDN keeps a year and is invalidated on overwrite.
    "CACHE_CONTROL": "public, max-age=86400, s-maxage=31536000",
    # Keep originals in the primary bucket when a row is deleted (no accidental data loss).
    "DELETE_ORIGINALS": False,
    # Seconds a row may stay pending before the sweep publishes it again (its message
    # may have been lost: a broker down at commit, or emptied). Duplicates are harmless.
    "STALE_AFTER": 180,
    # Seconds a worker holds a processing row (the lease, renewed between steps); past it
    # the worker is taken for dead and the sweep hands the row on. At least the task's
    # soft time limit (240 s here), so no live worker is ever taken over: a task can run
    # no longer than that.
    "LEASE": 240,
    # Transient trouble (S3/CloudFront away, throttled, timing out) is retried with
    # exponential backoff and full jitter, capped at RETRY_BACKOFF_MAX seconds, for
    # RETRY_WINDOW seconds; a row that fails after it is tried again by the sweep after
    # another window.
    "RETRY_WINDOW": 30 * 60,
    "RETRY_BACKOFF_MAX": 300,
    # Attempts at one revision that ended in an unexpected error, a time limit or a lost
    # worker; the row then fails with the last reason.
    "MAX_ATTEMPTS": 5,
    # Tries of the CDN tasks before their beat schedule takes over (see CDN below).
    "MAX_RETRIES": 6,
    # What sends S3 PUTs (originals and variants): "auto" is the AWS Common Runtime
    # (pipeline/crt.py, a third of botocore's CPU per PUT) when awscrt is installed (the
    # `crt` extra), else botocore; "botocore" is always botocore.
    "S3_PUTS": "auto",
    "CDN": {
        # Like Django's backend dicts: a dotted class path and its upper-case OPTIONS.
        # CloudFrontBackend (DISTRIBUTION_ID, ENDPOINT_URL, REGION_NAME, CONNECT_TIMEOUT,
        # READ_TIMEOUT, MAX_ATTEMPTS), LocalRecorderBackend (PATH), NoopBackend.
        "BACKEND": "pipeline.cdn.backends.LocalRecorderBackend",
        "OPTIONS": {},
        # Paths per invalidation request; CloudFront takes at most 3,000 per request and
        # 3,000 in progress per distribution.
        "BATCH_SIZE": 3000,
        # Wildcard paths in progress at once (CloudFront allows 15 per distribution).
        "MAX_WILDCARDS": 15,
        # Collapse a folder's paths into "folder/*" when it holds at least this many of
        # the batch's paths (a wildcard is billed as one path). 0 disables wildcards.
        "WILDCARD_THRESHOLD": 0,
        # A full batch is sent as soon as this many paths are pending (and an early flush
        # is enqueued when the backlog crosses it); a partial batch waits until no path was
        # requested for FLUSH_QUIET_PERIOD seconds, or its oldest path is FLUSH_MAX_DELAY
        # seconds old, so bulk work becomes few full requests.
        "FLUSH_THRESHOLD": 3000,
        "FLUSH_QUIET_PERIOD": 20,
        "FLUSH_MAX_DELAY": 300,
        # Beat periods (seconds) of the flush and of the status poll.
        "FLUSH_INTERVAL": 60,
        "POLL_INTERVAL": 120,
        # A request the CDN refuses for good (wrong distribution, bad request) is retried
        # with backoff, then set aside after this many refusals so later requests go on.
        "MAX_REFUSALS": 5,
        # The cost estimate of `manage.py cdn_status` (CloudFront's price list).
        "FREE_PATHS_PER_MONTH": 1000,
        "PRICE_PER_PATH": "0.005",
    },
    "MIGRATION": {
        # A chunk task holds at most CHUNK_SIZE files and CHUNK_BYTES bytes (a larger file
        # is a chunk of its own): small files share a task's fixed cost (about 11 ms of
        # CPU: the task, its queries, the next chunk's publish), large ones keep a chunk's
        # upload and rendering short. MAX_CHUNKS_IN_FLIGHT: chunk tasks in the broker at
        # once per run.
        "CHUNK_SIZE": 200,
        "CHUNK_BYTES": 32 * 1024 * 1024,
        "MAX_CHUNKS_IN_FLIGHT": 8,
        # Top folder of the standardized keys of migrated originals (primary bucket).
        "KEY_PREFIX": "legacy",
        # Concurrent uploads inside one chunk task, sharing one S3 client (capped by the
        # client's max_pool_connections, so no thread waits for a connection).
        "UPLOAD_THREADS": 16,
        # A chunk queued this long ago (seconds) without finishing is published again:
        # its message was lost (at-most-once publishing, or a whole worker killed).
        "STALE_CHUNK_AFTER": 600,
        # A detached run still scanning or planning whose worker has not renewed its
        # heartbeat (every 10 s) for this long (seconds) is started again by the sweep:
        # its worker died, and start_run, acknowledged on receipt, died with it.
        "STALE_START_AFTER": 600,
        # A chunk processes the rows it links or imports itself, from the files it has
        # just uploaded (no task per row, no GET of each original), when it runs on a
        # process of its own: a prefork worker, or in-process without a broker. On a
        # thread pool (docker-compose.yml's migration worker) the rows get the save's task
        # on the cpu queue instead, rendered where rendering is sized to run. False: always
        # the save's task.
        "PROCESS_IN_CHUNK": True,
    },
}


@dataclass(frozen=True)
class PipelineSettings:
    """The merged, validated ``settings.PIPELINE``."""

    raw: dict[str, Any]
    profiles: dict[str, Profile]

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def profile(self, name: str | None = None) -> Profile:
        """The profile called ``name`` (the default profile when None)."""
        name = name or self.raw["DEFAULT_PROFILE"]
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles))
            raise ImproperlyConfigured(
                f"PIPELINE profile {name!r} is not defined (known: {known})"
            ) from None


def _merge(defaults: dict[str, Any], given: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ImproperlyConfigured(f"Unknown key(s) in {where}: {', '.join(unknown)}")
    merged = dict(defaults)
    for key, value in given.items():
        default = defaults[key]
        if isinstance(default, dict) and default and key != "PROFILES":
            if not isinstance(value, dict):
                raise ImproperlyConfigured(f"{where}[{key!r}] must be a dict")
            merged[key] = _merge(default, value, f"{where}[{key!r}]")
        else:
            merged[key] = value
    return merged


def load(raw_setting: dict[str, Any] | None) -> PipelineSettings:
    """Merge a ``PIPELINE`` dict over the defaults and validate it."""
    from pipeline.imaging import profile_from_dict

    raw = _merge(DEFAULTS, raw_setting or {}, "settings.PIPELINE")
    if not isinstance(raw["PROFILES"], dict) or not raw["PROFILES"]:
        raise ImproperlyConfigured("settings.PIPELINE['PROFILES'] must name at least one profile")
    profiles: dict[str, Profile] = {}
    for name, spec in raw["PROFILES"].items():
        try:
            profiles[name] = profile_from_dict(name, spec)
        except ProfileError as e:
            raise ImproperlyConfigured(f"PIPELINE profile {name!r}: {e}") from e
    if raw["DEFAULT_PROFILE"] not in profiles:
        raise ImproperlyConfigured(
            f"PIPELINE DEFAULT_PROFILE {raw['DEFAULT_PROFILE']!r} is not among PROFILES"
        )
    for key, low in (
        ("STALE_AFTER", 1),
        ("LEASE", 1),
        ("RETRY_WINDOW", 0),
        ("RETRY_BACKOFF_MAX", 1),
        ("MAX_ATTEMPTS", 1),
        ("MAX_RETRIES", 0),
    ):
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
            raise ImproperlyConfigured(f"PIPELINE {key} must be a number of at least {low}")
    if raw["S3_PUTS"] not in ("auto", "botocore"):
        raise ImproperlyConfigured("PIPELINE S3_PUTS must be 'auto' or 'botocore'")
    _validate_cdn(raw["CDN"])
    return PipelineSettings(raw=raw, profiles=profiles)


def _validate_cdn(cdn: dict[str, Any]) -> None:
    """Check the CDN section's types and ranges (the backend's OPTIONS are checked by
    ``pipeline.cdn.backends.get_backend``, which knows each backend's options)."""

    def number(key: str, low: float, high: float | None = None) -> None:
        value = cdn[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ImproperlyConfigured(f"PIPELINE CDN {key} must be a number")
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ImproperlyConfigured(f"PIPELINE CDN {key} must be {bounds}")

    if not isinstance(cdn["BACKEND"], str) or "." not in cdn["BACKEND"]:
        raise ImproperlyConfigured("PIPELINE CDN BACKEND must be a dotted class path")
    if not isinstance(cdn["OPTIONS"], dict):
        raise ImproperlyConfigured("PIPELINE CDN OPTIONS must be a dict")
    number("BATCH_SIZE", 1, 3000)
    number("MAX_WILDCARDS", 0, 15)
    number("WILDCARD_THRESHOLD", 0)
    number("FLUSH_THRESHOLD", 1)
    number("FLUSH_QUIET_PERIOD", 0)
    number("FLUSH_MAX_DELAY", 0)
    number("FLUSH_INTERVAL", 1)
    number("POLL_INTERVAL", 1)
    number("MAX_REFUSALS", 1)
    number("FREE_PATHS_PER_MONTH", 0)
    try:
        price = Decimal(str(cdn["PRICE_PER_PATH"]))
    except InvalidOperation:
        price = Decimal(-1)
    if not price.is_finite() or price < 0:
        raise ImproperlyConfigured("PIPELINE CDN PRICE_PER_PATH must be a non-negative decimal")


@cache
def pipeline_settings() -> PipelineSettings:
    """The project's validated pipeline settings (cached; reset when settings change)."""
    return load(getattr(settings, "PIPELINE", None))


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "PIPELINE":
        pipeline_settings.cache_clear()

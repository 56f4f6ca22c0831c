"""The pipeline's exception tree.

Every failure the pipeline can name is one of two kinds, and the kind decides what
happens next:

* ``PermanentError``: the input is bad (a corrupt file, a decompression bomb, a file
  that is not an image, a request the CDN refuses). Retrying cannot help: the row is
  marked failed (a CDN request set aside) with the one-line ``reason``, and the worker
  moves on.
* ``TransientError``: the outside world hiccuped (S3 or CloudFront unreachable,
  throttling, a timeout). Tasks retry these with exponential backoff and jitter.

Anything else is a bug and bubbles up unchanged. This module imports nothing from
Django so that the pure imaging core can raise these errors.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class PermanentError(PipelineError):
    """Bad input: never retried. ``reason`` is one line a person understands."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ImageRejected(PermanentError):
    """The imaging engine refused the bytes ("truncated JPEG", "not an image: HTML")."""


class ProfileError(ValueError):
    """A profile definition is invalid; surfaced as ``ImproperlyConfigured`` by Django code."""


class ObjectNotFound(PermanentError):
    """A storage key that should exist does not (a 404 from the bucket)."""


class UnsafePath(PermanentError):
    """A path or key would escape its root (``..``, absolute paths, links out of a tree)."""


class ContentMismatch(PermanentError):
    """The bytes stored would not be the bytes expected (a file changed while it was read):
    the storage refused them (S3's Content-MD5 check), nothing was written."""


class ConditionalWriteUnsupported(PipelineError):
    """The storage cannot write "only if no object is at the key" (an S3-compatible server
    that answers If-None-Match on a PUT with 501 NotImplemented, or rejects it): the caller
    looks at the key itself, then writes plainly."""


class CDNRefused(PermanentError):
    """The CDN refused an invalidation request for a reason a retry cannot fix (a wrong
    distribution id, access denied, a malformed request). ``reason`` is the CDN's code and
    message; the request is retried a few times, then set aside for a person to decide."""


class TransientError(PipelineError):
    """A temporary failure of a dependency; retried with backoff."""


class StorageUnavailable(TransientError):
    """The bucket could not be reached or throttled us."""


class CDNUnavailable(TransientError):
    """CloudFront could not be reached, throttled us, or has too many invalidations in progress."""

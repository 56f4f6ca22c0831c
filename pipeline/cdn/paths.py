"""Pure: public-bucket object keys -> CloudFront invalidation paths.

CloudFront wants each invalidation path to start with ``/`` and, in its words, "if the
path includes non-ASCII characters or unsafe characters as defined in RFC 1738,
URL-encode those characters. Don't URL-encode any other characters in the path, or
CloudFront will not invalidate the old version of the updated file." So this encoder is
deliberately *not* ``urllib.parse.quote`` (which never encodes ``~`` and encodes the
RFC 1738 "safe" and "reserved" characters CloudFront wants left alone). It keeps:

* letters, digits and RFC 1738's safe characters ``$ - _ . + ! ' ( ) ,``,
* the reserved characters that are legal inside a path: ``/ ; : @ = &``,

and percent-encodes (UTF-8, upper-case hex) everything else: spaces, non-ASCII, the
unsafe ``" < > # % { } | \\ ^ ~ [ ] ```, control characters, ``?`` (which would start a
query string) and ``*`` (which CloudFront reads as a wildcard: a literal asterisk in a
key must never invalidate a whole folder by accident, nor be rejected in mid-path).

Wildcards are produced only by :func:`wildcard_for`, never by encoding a key. Nothing in
this module imports Django.
"""

from __future__ import annotations

import hashlib
import string

WILDCARD = "*"

_KEPT = frozenset(string.ascii_letters + string.digits + "$-_.+!'()," + "/;:@=&")


def _encode_char(char: str) -> str:
    if char in _KEPT:
        return char
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))


def cloudfront_path(key: str) -> str:
    """The invalidation path of an object key: ``media/a b.jpg`` -> ``/media/a%20b.jpg``.

    Raises ``ValueError`` for an empty key or one with a leading slash: callers pass object
    keys, and guessing whether ``/x`` is a key or already a path would invalidate the wrong
    object.
    """
    if not key:
        raise ValueError("an empty object key has no CloudFront path")
    if key.startswith("/"):
        raise ValueError(f"object keys have no leading slash: {key!r}")
    return "/" + "".join(_encode_char(char) for char in key)


def is_wildcard(path: str) -> bool:
    """Whether ``path`` is a wildcard path (``/media/x/*``)."""
    return path.endswith(WILDCARD)


def folder_of(path: str) -> str:
    """The folder of an invalidation path, with its trailing slash (``/a/b/c.jpg`` -> ``/a/b/``)."""
    return path[: path.rindex("/") + 1]


def wildcard_for(folder: str) -> str:
    """The wildcard path covering everything under ``folder`` (which ends with ``/``)."""
    if not folder.startswith("/") or not folder.endswith("/"):
        raise ValueError(f"not a folder path: {folder!r}")
    return folder + WILDCARD


def covers(wildcard: str, path: str) -> bool:
    """Whether ``wildcard`` invalidates ``path`` (a prefix match, as CloudFront does)."""
    return path.startswith(wildcard[:-1])


def path_digest(path: str) -> str:
    """A fixed-length key for an invalidation path (paths can exceed what an index holds)."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()

"""What an old row's image field holds, turned into the legacy file it refers to.

Old sites stored the same file in many spellings: the relative name a ``FileField``
keeps (``photos/a b.jpg``), the same with the ``MEDIA_URL`` prefix (``/media/photos/...``),
a full URL from another host or a CDN (``https://old.example.com/media/photos/a%20b.jpg``),
Windows backslashes, ``./`` segments, another case (``Photos/A B.JPG``), or the other
unicode normal form (macOS writes NFD names, Linux forms post NFC). Resolution is split in
two pure steps so that phase 2 can run the second one against the database:

1. ``normalize_reference(value)`` -> candidate legacy paths, in priority order (clean,
   relative, POSIX). A value whose dot segments would climb above the media root
   (``../etc/passwd``, ``/media/../../x``) yields *no* candidate and a reason: it is
   reported, never matched, never blanked.
2. ``resolve_reference(value, index)`` looks the candidates up in a ``LegacyIndex``: an
   exact path first, then the *folded* ``lookup_key`` (NFC + casefold), which is how a row
   holding ``Photos/Café.JPG`` (NFC) finds ``photos/cafe\\u0301.jpg`` (NFD) on disk. Two
   different files folding to the same key make the reference ``ambiguous`` (reported).

``lookup_key`` must be applied to both sides: to scanned paths when they are stored, and
to candidates when they are looked up.
"""

from __future__ import annotations

import enum
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

__all__ = [
    "LegacyIndex",
    "Match",
    "PathIndex",
    "Reference",
    "Resolution",
    "legacy_candidates",
    "lookup_key",
    "normalize_reference",
    "resolve_reference",
]

ESCAPES_ROOT = "escapes the media root"


def lookup_key(path: str) -> str:
    """The case- and normal-form-insensitive key of a relative POSIX path.

    Canonical caseless matching (Unicode 3.13: NFD, casefold, then NFC), so that NFC and
    NFD spellings and any case compare equal (full case folding: ``ß`` matches ``SS``).
    Compatibility forms are *not* folded (``①`` stays distinct from ``1``): those are
    different names, not different spellings of one name.
    """
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", path).casefold())


@dataclass(frozen=True, slots=True)
class Reference:
    """A legacy value and the relative paths it may denote (empty -> ``reason`` says why)."""

    value: str
    candidates: tuple[str, ...]
    reason: str | None = None


def normalize_reference(
    value: str,
    *,
    media_url: str = "/media/",
    media_roots: Sequence[str] = (),
) -> Reference:
    """The candidate legacy paths of ``value``, most likely first.

    ``media_url`` is the old site's ``MEDIA_URL`` (a path or an absolute URL; only its
    path matters since old rows may name any host). ``media_roots`` are old absolute
    ``MEDIA_ROOT`` folders, for rows that stored filesystem paths (``/srv/site/media/...``).
    Relative values are tried as stored first (a ``FileField`` keeps the raw name, so
    ``a%20b.jpg`` may be a real file name), then percent-decoded; URLs the other way round.
    """
    text = value.strip()
    if not text:
        return Reference(value, (), "empty value")
    if "\x00" in text:
        return Reference(value, (), "not a file path")
    text = text.replace("\\", "/")
    media_path = _media_path(media_url)
    raw_variants = _variants(text, media_path, [_root_path(r) for r in media_roots])
    candidates: list[str] = []
    for variant in raw_variants:
        cleaned = _clean(variant)
        if cleaned is None:
            return Reference(value, (), ESCAPES_ROOT)
        if _drop_query(variant).endswith("/"):
            continue  # a folder, not a file
        if cleaned and cleaned not in candidates:
            candidates.append(cleaned)
    if not candidates:
        return Reference(value, (), "not a file path")
    return Reference(value, tuple(candidates))


def legacy_candidates(
    value: str, *, media_url: str = "/media/", media_roots: Sequence[str] = ()
) -> list[str]:
    """The candidate legacy paths of ``value`` (empty if it cannot name a file in the root)."""
    return list(normalize_reference(value, media_url=media_url, media_roots=media_roots).candidates)


class LegacyIndex(Protocol):
    """The scanned legacy paths, queried by exact path and by ``lookup_key``.

    Phase 2 implements it with indexed ``path`` and ``lookup_key`` columns of the scan
    table; ``PathIndex`` is the in-memory version for tests and small trees.
    """

    def exact(self, path: str) -> bool: ...

    def folded(self, key: str) -> Sequence[str]: ...


class PathIndex:
    """An in-memory ``LegacyIndex`` over an iterable of legacy paths (O(paths) memory)."""

    def __init__(self, paths: Iterable[str]) -> None:
        self._paths: set[str] = set()
        folded: defaultdict[str, list[str]] = defaultdict(list)
        for path in paths:
            if path not in self._paths:
                self._paths.add(path)
                folded[lookup_key(path)].append(path)
        self._folded = {key: tuple(sorted(group)) for key, group in folded.items()}

    def exact(self, path: str) -> bool:
        return path in self._paths

    def folded(self, key: str) -> Sequence[str]:
        return self._folded.get(key, ())


class Match(enum.StrEnum):
    """How a legacy value resolved. Values are stable (stored in phase 2 rows)."""

    EXACT = "exact"
    FOLDED = "folded"  # matched only after case / unicode folding
    AMBIGUOUS = "ambiguous"  # folds onto several different legacy files
    DANGLING = "dangling"  # a well-formed path, but no such file was scanned
    INVALID = "invalid"  # cannot name a file inside the root (empty, escapes it)

    @property
    def linked(self) -> bool:
        return self in (Match.EXACT, Match.FOLDED)


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome for one legacy value: the legacy path it refers to, or why none."""

    value: str
    status: Match
    path: str | None = None
    matches: tuple[str, ...] = ()
    reason: str | None = None


def resolve_reference(
    value: str,
    index: LegacyIndex,
    *,
    media_url: str = "/media/",
    media_roots: Sequence[str] = (),
) -> Resolution:
    """Find the legacy file ``value`` refers to: exact paths first, then folded keys.

    Exact beats folded across *all* candidates, so that on a case-sensitive disk holding
    both ``A.jpg`` and ``a.jpg`` each spelling finds its own file.
    """
    ref = normalize_reference(value, media_url=media_url, media_roots=media_roots)
    if not ref.candidates:
        return Resolution(value, Match.INVALID, reason=ref.reason)
    for candidate in ref.candidates:
        if index.exact(candidate):
            return Resolution(value, Match.EXACT, path=candidate, matches=(candidate,))
    for candidate in ref.candidates:
        matches = tuple(index.folded(lookup_key(candidate)))
        if len(matches) == 1:
            return Resolution(value, Match.FOLDED, path=matches[0], matches=matches)
        if matches:
            return Resolution(
                value,
                Match.AMBIGUOUS,
                matches=matches,
                reason=f"matches {len(matches)} files that differ only by case or unicode form",
            )
    return Resolution(value, Match.DANGLING, reason="no such file in the legacy tree")


def _variants(text: str, media_path: str, roots: list[str]) -> list[str]:
    """Raw candidate spellings of ``text`` (not yet dot-normalized), most likely first."""
    out: list[str] = []
    lowered = text.lower()
    if lowered.startswith(("http://", "https://", "//")):
        # An absolute URL: the host is irrelevant (old domain, CDN); query and fragment
        # are cache busters. URLs are percent-encoded, so decoded comes first.
        path = urlsplit(text).path
        for p in (unquote(path), path):
            out.append(_after_media(p, media_path) or p)
        return out
    if text.startswith("/") or _is_drive_path(text):
        # An absolute path: a filesystem path under an old MEDIA_ROOT, or a URL path.
        for root in roots:
            if _starts_with_dir(text, root):
                out.append(text[len(root) :])
        path = _drop_query(text)
        for p in (unquote(path), path, unquote(text), text):
            after = _after_media(p, media_path)
            if after is not None:
                out.append(after)
        if not _is_drive_path(text):
            out.extend((unquote(path), path))
        return out
    # A relative value: what a FileField stores, raw. A "media/..." prefix may be a real
    # folder of the root, or a MEDIA_URL written without its leading slash: try both.
    path = _drop_query(text)
    out.extend((text, unquote(text), path, unquote(path)))
    for p in (text, unquote(path)):
        after = _after_media("/" + p, media_path)
        if after is not None:
            out.append(after)
    return out


def _clean(path: str) -> str | None:
    """Resolve ``.``/``..``/empty segments; None if a ``..`` climbs above the root."""
    parts: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(segment)
    return "/".join(parts)


def _media_path(media_url: str) -> str:
    """``MEDIA_URL``'s path with one leading and one trailing slash ("" if it is the root)."""
    path = urlsplit(media_url.replace("\\", "/")).path if "//" in media_url else media_url
    path = path.strip("/")
    return f"/{path}/" if path else ""


def _root_path(root: str) -> str:
    return root.replace("\\", "/").rstrip("/")


def _after_media(path: str, media_path: str) -> str | None:
    """The part of ``path`` after the first ``MEDIA_URL`` segment run, if it has one."""
    if not media_path:
        return path.lstrip("/") if path.startswith("/") else None
    at = path.find(media_path)
    return path[at + len(media_path) :] if at >= 0 else None


def _starts_with_dir(path: str, root: str) -> bool:
    if _is_drive_path(root):  # Windows paths compare without case
        return path.lower().startswith(root.lower() + "/")
    return path.startswith(root + "/")


def _is_drive_path(text: str) -> bool:
    return len(text) >= 3 and text[0].isalpha() and text[1] == ":" and text[2] == "/"


def _drop_query(text: str) -> str:
    return text.split("#", 1)[0].split("?", 1)[0]

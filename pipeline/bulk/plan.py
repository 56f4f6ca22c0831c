"""Standardized object keys for legacy files, the collision rule, and de-duplication.

Key layout: ``<prefix>/<folder-slug>/.../<stem-slug>.<ext>``, for example
``Photos/Summer 2019/IMG_0001 (1).JPG`` -> ``legacy/photos/summer-2019/img-0001-1.jpg``.

* A slug is NFKD-normalized, stripped to ASCII, lower-cased; every run of anything else
  than ``a-z0-9`` becomes one ``-``; leading and trailing ``-`` go. NFC and NFD spellings
  of a name therefore give the *same* slug.
* The on-disk extension is dropped when it is a known image extension (any case) and the
  extension of the *detected* format is used, one spelling per format (``EXTENSIONS``):
  ``.JPG``, ``.jpeg`` and a JPEG named ``.png`` all end in ``.jpg``.
* A name with nothing left (``★.jpg``, ``日本.png``) gets a stable fallback,
  ``file-<8 hex>`` (``dir-<8 hex>`` for a folder), hashed from its ``lookup_key`` so that
  every spelling of that name gets the same fallback, and different names different ones.
* Lengths are bounded: a segment longer than 80 characters keeps its first 71 plus
  ``-<8 hex>`` of the whole slug; folders beyond 240 characters are folded into one
  ``more-<8 hex>`` segment. Keys stay far below S3's 1,024 bytes.
* ``..`` segments and absolute paths raise ``UnsafePath``: the scanner never produces
  them, so one reaching here is a bug or an attack. Output keys contain only
  ``[a-z0-9-/.]``, never ``..``, never a leading ``/``.

Collision rule (two *different* contents wanting the same key): *every* file in the
colliding group gets ``-<first 8 hex of its sha256>`` before the extension, not "all but
the first", because "first" would depend on scan order. If a suffixed key is itself some
other file's natural key (or two contents share 8 hex), the group uses 16, then 64 hex.
The decision depends only on the *set* of (path, content) pairs, never on their order.

De-duplication: identical content (same sha256) is one stored object. Its canonical path
is the first by (reached through a symlink, length in characters, code-point order):
a real file beats a link alias, ``file.jpg`` beats ``file (1).jpg`` and ``Copy of
file.jpg``, an NFC name beats its longer NFD twin, and equal lengths fall back to
code-point order (UTF-8 byte order: ``COLLATE "C"`` in PostgreSQL, ``BINARY`` in SQLite).
The object's key is the canonical path's (possibly suffixed) key; every legacy path of
that content maps to it.

Memory model: ``plan()`` holds one small record per image in memory (O(images)), fine
for tests, the sample tree and trees up to a few hundred thousand files. Phase 2 runs
the same rules as queries over the stored scan rows: ``standard_key`` per entry at
insert time, ``GROUP BY natural_key HAVING COUNT(DISTINCT sha256) > 1`` for collisions,
and ``ORDER BY via_link, LENGTH(path), path COLLATE "C"`` per sha256 for canonicals.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from pipeline import naming
from pipeline.bulk.references import (
    Match,
    PathIndex,
    Resolution,
    lookup_key,
    resolve_reference,
)
from pipeline.bulk.scan import Kind, ScanEntry
from pipeline.errors import UnsafePath

__all__ = [
    "EXTENSIONS",
    "IMAGE_SUFFIXES",
    "Plan",
    "PlannedLink",
    "PlannedObject",
    "canonical_order",
    "extension_for",
    "plan",
    "slugify",
    "standard_key",
    "suffixed_key",
]

EXTENSIONS: Mapping[str, str] = MappingProxyType(
    {
        "jpeg": "jpg",
        "jpg": "jpg",
        "mpo": "jpg",  # Pillow's name for a JPEG with a multi-picture trailer (Ultra HDR)
        "png": "png",
        "webp": "webp",
        "gif": "gif",
        "tiff": "tif",
        "bmp": "bmp",
        "avif": "avif",
        "heif": "heic",
        "heic": "heic",
    }
)
"""One extension per detected format. Keys are the imaging engine's lower-case format
tokens (``pipeline.imaging.detect.FORMATS``), plus Pillow's names for the same formats."""

IMAGE_SUFFIXES = frozenset(
    {
        "jpg", "jpeg", "jpe", "jfif", "pjpeg", "pjp", "mpo", "png", "apng", "webp",
        "gif", "tif", "tiff", "bmp", "dib", "avif", "heic", "heif",
    }
)  # fmt: skip
"""On-disk extensions that are dropped from the stem (anything else stays in the name)."""

MAX_SEGMENT = 80
MAX_FOLDERS = 240
HASH_LENGTHS = (8, 16, 64)


def extension_for(fmt: str) -> str:
    """The one extension of a detected format; unknown formats use their slugged name."""
    ext = EXTENSIONS.get(fmt.lower())
    if ext is not None:
        return ext
    ext = slugify(fmt)
    if not ext:
        raise ValueError(f"no extension for format {fmt!r}")
    return ext


def slugify(text: str) -> str:
    """Lower-case ASCII slug of one name, unbounded (keys bound it); "" when nothing is left."""
    return naming.slugify(text, max_length=None)


def standard_key(rel_path: str, fmt: str, *, prefix: str = "legacy") -> str:
    """The natural standardized key of one legacy file (before the collision rule).

    ``rel_path`` is a scan path (relative, POSIX, as on disk); ``fmt`` the detected
    format. Pure and per-entry, so phase 2 can compute it while storing scan rows.
    """
    segments = _segments(rel_path)
    *folders, name = segments
    stem, dot, suffix = name.rpartition(".")
    if not dot or suffix.lower() not in IMAGE_SUFFIXES:
        stem = name
    folder_slugs = [_bounded(_slug_or_fallback(f, "dir")) for f in folders]
    stem_slug = _bounded(_slug_or_fallback(stem, "file"))
    parts = [*_prefix_segments(prefix), *_bounded_folders(folder_slugs), stem_slug]
    return "/".join(parts) + "." + extension_for(fmt)


def suffixed_key(key: str, sha256: str, length: int = 8) -> str:
    """``key`` with ``-<first length hex of sha256>`` before its extension."""
    head, dot, ext = key.rpartition(".")
    return f"{head}-{sha256[:length]}{dot}{ext}"


@dataclass(frozen=True, slots=True)
class PlannedObject:
    """One object to store: a distinct content and every legacy path that holds it."""

    key: str
    sha256: str
    md5: str | None
    size: int
    format: str
    width: int | None
    height: int | None
    paths: tuple[str, ...]  # canonical first, then the others in canonical order

    @property
    def canonical_path(self) -> str:
        return self.paths[0]

    @property
    def duplicates(self) -> int:
        """How many extra legacy copies this object folds."""
        return len(self.paths) - 1


@dataclass(frozen=True, slots=True)
class PlannedLink:
    """A legacy DB value matched against the plan: the new key, or None and why not."""

    resolution: Resolution
    key: str | None
    reason: str | None = None  # why not linked ("no such file ...", "refers to a rejected file")

    @property
    def linked(self) -> bool:
        return self.key is not None


@dataclass(frozen=True)
class Plan:
    """The keys of a whole (small) tree. Build it with ``plan()``."""

    objects: tuple[PlannedObject, ...]  # sorted by key
    collisions: Mapping[str, tuple[str, ...]]  # natural key -> the suffixed keys it became
    _by_path: Mapping[str, PlannedObject] = field(repr=False)
    _others: Mapping[str, ScanEntry] = field(repr=False)  # scanned files that are not images
    _index: PathIndex = field(repr=False)

    @property
    def paths(self) -> int:
        """Number of legacy image paths planned."""
        return len(self._by_path)

    @property
    def duplicates_folded(self) -> int:
        """Legacy image paths that are extra copies of a content stored once."""
        return len(self._by_path) - len(self.objects)

    def object_for(self, path: str) -> PlannedObject | None:
        """The object a legacy path (exactly as scanned) was folded into."""
        return self._by_path.get(path)

    def key_for(self, path: str) -> str | None:
        obj = self._by_path.get(path)
        return obj.key if obj else None

    def resolve(
        self, value: str, *, media_url: str = "/media/", media_roots: Sequence[str] = ()
    ) -> PlannedLink:
        """Match an old row's value to its new key (``references`` rules).

        An ambiguous folded match still links when every file it matches has the same
        content (they are one object), since the choice cannot change the result.
        """
        res = resolve_reference(value, self._index, media_url=media_url, media_roots=media_roots)
        if res.status.linked and res.path is not None:
            key = self.key_for(res.path)
            if key is not None:
                return PlannedLink(res, key)
            other = self._others[res.path]
            return PlannedLink(res, None, f"refers to a {other.kind} file: {other.reason}")
        if res.status is Match.AMBIGUOUS:
            keys = {self.key_for(p) for p in res.matches}
            if len(keys) == 1 and None not in keys:
                return PlannedLink(res, keys.pop())
        return PlannedLink(res, None, res.reason)


def plan(entries: Iterable[ScanEntry], *, prefix: str = "legacy") -> Plan:
    """Plan keys for every image entry. Same set of entries in, same plan out.

    Other entries get no key; they are kept only so that ``Plan.resolve`` can say that a
    row points at a rejected or non-image file rather than at nothing.
    """
    images: list[ScanEntry] = []
    others: dict[str, ScanEntry] = {}
    for e in entries:
        if e.kind is Kind.IMAGE and e.sha256 and e.format:
            images.append(e)
        elif e.kind is not Kind.JUNK:
            others[e.path] = e
    natural = {e.path: standard_key(e.path, e.format or "", prefix=prefix) for e in images}
    contents: defaultdict[str, set[str]] = defaultdict(set)
    for e in images:
        contents[natural[e.path]].add(e.sha256 or "")
    taken = set(natural.values())
    final: dict[tuple[str, str], str] = {}  # (natural key, sha256) -> key
    collisions: dict[str, tuple[str, ...]] = {}
    for key, shas in contents.items():
        if len(shas) == 1:
            final[(key, next(iter(shas)))] = key
            continue
        chosen = _resolve_collision(key, shas, taken)
        final.update(((key, sha), k) for sha, k in chosen.items())
        collisions[key] = tuple(sorted(chosen.values()))
    by_sha: defaultdict[str, list[ScanEntry]] = defaultdict(list)
    for e in images:
        by_sha[e.sha256 or ""].append(e)
    objects: list[PlannedObject] = []
    by_path: dict[str, PlannedObject] = {}
    for sha, group in by_sha.items():
        group.sort(key=canonical_order)
        first = group[0]
        obj = PlannedObject(
            key=final[(natural[first.path], sha)],
            sha256=sha,
            md5=first.md5,
            size=first.size,
            format=first.format or "",
            width=first.width,
            height=first.height,
            paths=tuple(dict.fromkeys(e.path for e in group)),
        )
        objects.append(obj)
        by_path.update((p, obj) for p in obj.paths)
    objects.sort(key=_key)
    return Plan(
        objects=tuple(objects),
        collisions=MappingProxyType(collisions),
        _by_path=MappingProxyType(by_path),
        _others=MappingProxyType(others),
        _index=PathIndex([*by_path, *others]),
    )


def _resolve_collision(key: str, shas: set[str], taken: set[str]) -> dict[str, str]:
    """Suffix every content of a colliding key, lengthening until the keys are unique."""
    for length in HASH_LENGTHS:
        chosen = {sha: suffixed_key(key, sha, length) for sha in shas}
        keys = set(chosen.values())
        if len(keys) == len(shas) and not keys & taken:
            return chosen
    raise ValueError(f"cannot resolve the key collision on {key!r}")  # identical sha256s


def canonical_order(entry: ScanEntry) -> tuple[bool, int, str]:
    """Sort key of the paths of one content: the first one is the canonical path."""
    return (entry.via_link, len(entry.path), entry.path)


def _key(obj: PlannedObject) -> str:
    return obj.key


def _segments(rel_path: str) -> list[str]:
    if not rel_path or rel_path.startswith("/"):
        raise UnsafePath(f"not a relative path: {rel_path!r}")
    segments = [s for s in rel_path.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise UnsafePath(f"path climbs out of the tree: {rel_path!r}")
    if not segments:
        raise UnsafePath(f"no file name in {rel_path!r}")
    return segments


def _prefix_segments(prefix: str) -> list[str]:
    segments = [s for s in prefix.strip("/").split("/") if s]
    for s in segments:
        if s in (".", "..") or s != s.strip() or "\\" in s:
            raise ValueError(f"invalid key prefix: {prefix!r}")
    return segments


def _slug_or_fallback(name: str, kind: str) -> str:
    return slugify(name) or f"{kind}-{_hash8(lookup_key(name))}"


def _bounded(slug: str) -> str:
    if len(slug) <= MAX_SEGMENT:
        return slug
    return slug[: MAX_SEGMENT - 9].rstrip("-") + "-" + _hash8(slug)


def _bounded_folders(slugs: list[str]) -> list[str]:
    if len("/".join(slugs)) <= MAX_FOLDERS:
        return slugs
    kept: list[str] = []
    used = 0
    for s in slugs:
        if used + len(s) + 1 > MAX_FOLDERS - 14:  # room for "/more-<8 hex>"
            break
        kept.append(s)
        used += len(s) + 1
    return [*kept, f"more-{_hash8('/'.join(slugs))}"]


def _hash8(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]

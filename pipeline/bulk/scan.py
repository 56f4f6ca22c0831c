"""Stream a legacy media tree into classified, checksummed ``ScanEntry`` records.

Why it looks like this:

* **Streaming.** ``scan()`` is a generator over an explicit stack of directories (no
  recursion, so no depth limit from Python's stack). Memory is O(depth x entries of the
  directories on the current path), never O(files in the tree): a million files in a
  thousand folders cost a few thousand ``DirEntry`` objects at a time. Each directory's
  listing is sorted by name, so the output order is deterministic (a pre-order walk in
  code-point order of the names as stored on disk).
* **Links.** A symbolic link is followed only if its fully resolved target lies inside the
  root; a link out of the tree is reported (``rejected``, "link outside the tree") and never
  opened. A directory link whose target is a directory on the current path (an ancestor,
  by ``(st_dev, st_ino)``) is a loop: reported, never entered. Links to other directories
  inside the tree are followed, so a file reachable under two names yields two entries
  with the same checksum; de-duplication (``plan``) folds them, and rows that used either
  name still resolve. ``max_depth`` bounds pathological trees made of many such links.
* **Junk by name, images by content.** Hidden files and folders and known OS litter
  (``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, ``__MACOSX``, AppleDouble ``._*``) are
  ``junk`` and never opened; a hidden or junk *directory* is one entry and is not entered.
  Every other regular file is opened and sniffed by the imaging engine's header probe
  (the extension is never trusted): ``image``, ``not_image`` (the probe said "not an
  image: ...") or ``rejected`` (empty, unreadable, or refused for any other reason).
* **Too large, never opened.** A file larger than ``max_bytes`` (the profile's file size
  limit, which processing would enforce anyway) is ``rejected`` from its size as listed
  ("3 MiB exceeds the 1 MiB file size limit"), before it is opened: a 4 GB video in a
  media folder costs one ``stat``, not a 4 GB read.
* **One read per file.** sha256 (our content identity) and md5 (to compare with the ETag
  of a single-part S3 upload) are computed in the same streaming pass that feeds the
  probe. The probe sees only a head of the file: 64 KiB, grown 4x at a time (up to
  32 MiB) while the probe refuses it for any reason other than "not an image", since a
  JPEG may carry a 400 KB ICC profile before its frame header and Pillow parses a WebP
  only when it is whole.
* **Re-runs read nothing.** Every file entry carries its ``mtime_ns``; a caller that kept
  a previous scan passes ``reuse``, asked with ``(path, size, mtime_ns)`` before a file is
  opened, and an entry it returns stands for the file (the rsync rule: same size and
  modification time, same content). A second scan of an unchanged tree is a walk of
  ``stat`` calls.
* **Truncation.** A header probe cannot see a missing end, and a full decode here would
  cost as much as the processing itself. So the scan does a cheap structural check on the
  bytes it streams anyway: a JPEG must have its end-of-image marker (``FF D9``) in its
  last 4 KiB, a PNG its ``IEND`` chunk, a WebP as many bytes as its RIFF header declares;
  otherwise the file is ``rejected`` with "truncated JPEG" (PNG, WebP). Damage this cannot
  see (a corrupt scan inside a complete file, a truncated GIF) is caught by the full
  decode at processing time, which fails the row with the engine's reason (Pillow raises
  on truncated data; ``LOAD_TRUNCATED_IMAGES`` stays off).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from pipeline.errors import ImageRejected

__all__ = [
    "JUNK_NAMES",
    "Kind",
    "Probe",
    "ProbedImage",
    "Reuse",
    "ScanEntry",
    "default_probe",
    "scan",
]

HEAD_SIZE = 64 * 1024
"""Bytes handed to the probe first: enough for the header of almost every image."""

MAX_HEAD_SIZE = 32 * 1024 * 1024
"""The probe is retried with a 4x larger head up to this size when it cannot parse a head.

Some headers are large (a JPEG's ICC profile), and Pillow's WebP parser needs the whole
file: a WebP image is handed to the probe whole, up to this size."""

CHUNK_SIZE = 1024 * 1024
"""Read size for the checksum stream after the head."""

TAIL_SIZE = 4 * 1024
"""The end window kept for the truncation check (JPEG EOI may be followed by padding)."""

JUNK_NAMES: dict[str, str] = {
    name.casefold(): name
    for name in (
        ".DS_Store",
        "Thumbs.db",
        "ehthumbs.db",
        "desktop.ini",
        "__MACOSX",
        "@eaDir",
        ".Spotlight-V100",
        ".Trashes",
        ".fseventsd",
        ".AppleDouble",
        "$RECYCLE.BIN",
        "Icon\r",
    )
}
"""OS and tool litter, matched without case: reported as ``junk: <name>``, never opened."""


class Kind(enum.StrEnum):
    """What a scanned path turned out to be. Values are stable (stored in phase 2 rows)."""

    IMAGE = "image"
    JUNK = "junk"
    NOT_IMAGE = "not_image"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class ScanEntry:
    """One path of the legacy tree, classified.

    ``path`` is relative to the scanned root, POSIX, exactly as on disk (no case or
    unicode normalization: this is the name the file must be opened by). Checksums are
    lower-case hex, set for every file that was read (images, not-images, and files
    rejected after reading). ``format`` (the engine's lower-case token: "jpeg", "png",
    "webp"...), ``width`` and ``height`` (as displayed) are set only for images; ``reason``
    says why a path is not an image ("junk: .DS_Store", "truncated JPEG", ...). Entries
    for directories (a hidden folder, a loop) carry size 0 and no checksum. ``via_link``
    is True when the path goes through a symbolic link (the file itself or a folder above
    it): de-duplication prefers a real path over such an alias. ``mtime_ns`` is the file's
    modification time (the link target's, for a link), None for directories and for files
    that could not be stat-ed.
    """

    path: str
    size: int
    sha256: str | None
    md5: str | None
    kind: Kind
    format: str | None = None
    width: int | None = None
    height: int | None = None
    reason: str | None = None
    via_link: bool = False
    mtime_ns: int | None = None

    @property
    def is_image(self) -> bool:
        return self.kind is Kind.IMAGE


class ProbedImage(Protocol):
    """What the scan needs from the probe's result (``pipeline.imaging.SourceInfo``)."""

    @property
    def format(self) -> str: ...

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...


Probe = Callable[[bytes], ProbedImage]
"""Header probe: bytes in, format and size out, ``ImageRejected(reason)`` if not usable.

By convention (``pipeline.errors``) a reason starting with "not an image" means the bytes
are some other kind of file; any other reason means a broken or refused image.
"""

Reuse = Callable[[str, int, int], "ScanEntry | None"]
"""``(path, size, mtime_ns)`` -> an earlier entry for that file, or None to read it."""


def default_probe(data: bytes) -> ProbedImage:
    """The imaging engine's header probe, imported on first use.

    Lazy so that this module imports (and its tests run) without the imaging engine, and
    so that a scan never pays for the engine's import unless it reads a file.
    """
    from pipeline.imaging import probe

    return probe(data)


@dataclass(slots=True)
class _Frame:
    """A directory being listed: the rest of its sorted entries, and who it is."""

    rel_prefix: str
    entries: Iterator[os.DirEntry[str]]
    identity: tuple[int, int]
    depth: int
    via_link: bool


@dataclass(slots=True)
class _Walk:
    root_real: str
    probe: Probe
    max_depth: int
    checksum_all: bool
    reuse: Reuse | None = None
    max_bytes: int | None = None
    stack: list[_Frame] = field(default_factory=list)
    on_path: set[tuple[int, int]] = field(default_factory=set)


def scan(
    root: Path | str,
    *,
    probe: Probe | None = None,
    max_depth: int = 64,
    checksum_all: bool = True,
    reuse: Reuse | None = None,
    max_bytes: int | None = None,
) -> Iterator[ScanEntry]:
    """Yield one ``ScanEntry`` per file (and per skipped directory) under ``root``, lazily.

    ``probe`` defaults to ``pipeline.imaging.probe``; tests and tools may pass another.
    ``checksum_all=False`` stops reading a file as soon as it is known not to be an image
    (no checksums for not-images), for trees full of large non-image files.
    ``reuse`` lets a re-scan skip reading unchanged files (see the module docstring).
    ``max_bytes``: larger files are rejected from their size, unopened (None: no limit).
    Raises ``NotADirectoryError`` if ``root`` is not a directory.
    """
    root_real = os.path.realpath(root)
    if not os.path.isdir(root_real):
        raise NotADirectoryError(f"not a directory: {root}")
    return _walk(
        _Walk(
            root_real=root_real,
            probe=probe or default_probe,
            max_depth=max_depth,
            checksum_all=checksum_all,
            reuse=reuse,
            max_bytes=max_bytes,
        )
    )


def _walk(w: _Walk) -> Iterator[ScanEntry]:
    root_st = os.stat(w.root_real)
    pushed = _push(w, w.root_real, "", (root_st.st_dev, root_st.st_ino), depth=0, via_link=False)
    if pushed is not None:  # the root itself cannot be listed
        raise PermissionError(f"cannot list {w.root_real}: {pushed.reason}")
    while w.stack:
        frame = w.stack[-1]
        entry = next(frame.entries, None)
        if entry is None:
            w.stack.pop()
            w.on_path.discard(frame.identity)
            continue
        yield from _visit(w, frame, entry)


def _push(
    w: _Walk,
    real_dir: str,
    rel_prefix: str,
    identity: tuple[int, int],
    *,
    depth: int,
    via_link: bool,
) -> ScanEntry | None:
    """List ``real_dir`` (sorted) onto the stack, or return the entry saying why not."""
    try:
        with os.scandir(real_dir) as it:
            entries = sorted(it, key=_name)
    except OSError as e:
        return _rejected(rel_prefix.rstrip("/"), f"unreadable directory: {_strerror(e)}")
    w.stack.append(_Frame(rel_prefix, iter(entries), identity, depth, via_link))
    w.on_path.add(identity)
    return None


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _visit(w: _Walk, frame: _Frame, entry: os.DirEntry[str]) -> Iterator[ScanEntry]:
    rel = frame.rel_prefix + entry.name
    if not _is_utf8(rel):
        # Not storable in a row or an S3 key; the operator renames it and re-runs.
        yield _rejected(_displayable(rel), "name is not valid UTF-8")
        return
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError as e:
        yield _rejected(rel, f"unreadable: {_strerror(e)}")
        return
    is_dir = stat.S_ISDIR(st.st_mode)
    junk = _junk_reason(entry.name, is_dir=is_dir)
    if junk is not None:
        yield ScanEntry(rel, 0 if is_dir else st.st_size, None, None, Kind.JUNK, reason=junk)
        return
    real_path = entry.path
    via_link = frame.via_link
    if stat.S_ISLNK(st.st_mode):
        via_link = True
        real_path = os.path.realpath(entry.path)
        if not _inside(real_path, w.root_real):
            yield _rejected(rel, "link outside the tree")
            return
        try:
            st = os.stat(real_path)
        except FileNotFoundError:
            yield _rejected(rel, "broken link")
            return
        except OSError as e:
            yield _rejected(rel, f"unreadable: {_strerror(e)}")
            return
    if stat.S_ISDIR(st.st_mode):
        identity = (st.st_dev, st.st_ino)
        if identity in w.on_path:
            yield _rejected(rel, "link loop: points to an enclosing folder")
        elif frame.depth + 1 > w.max_depth:
            yield _rejected(rel, f"too deep (more than {w.max_depth} levels)")
        else:
            refused = _push(
                w, real_path, rel + "/", identity, depth=frame.depth + 1, via_link=via_link
            )
            if refused is not None:
                yield refused
        return
    if not stat.S_ISREG(st.st_mode):
        yield _rejected(rel, "not a regular file")
        return
    if w.max_bytes is not None and st.st_size > w.max_bytes:
        # Before any reuse too: the limit may have been lowered since the earlier scan.
        too_large = f"{_mib(st.st_size)} exceeds the {_mib(w.max_bytes)} file size limit"
        yield ScanEntry(
            rel,
            st.st_size,
            None,
            None,
            Kind.REJECTED,
            reason=too_large,
            via_link=via_link,
            mtime_ns=st.st_mtime_ns,
        )
        return
    known = w.reuse(rel, st.st_size, st.st_mtime_ns) if w.reuse and st.st_size else None
    found = known or _scan_file(w, rel, real_path, st.st_size)
    yield dataclasses.replace(found, path=rel, via_link=via_link, mtime_ns=st.st_mtime_ns)


def _scan_file(w: _Walk, rel: str, real_path: str, size: int) -> ScanEntry:
    """Classify one regular file in a single streaming read."""
    if size == 0:
        return _rejected(rel, "empty file")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(real_path, flags)
    except OSError as e:
        return _rejected(rel, f"unreadable: {_strerror(e)}", size)
    try:
        with os.fdopen(fd, "rb", buffering=0) as f:
            # Re-check on the open descriptor: the path may have changed since the listing.
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return _rejected(rel, "not a regular file")
            return _read_and_classify(w, rel, f, size)
    except OSError as e:
        return _rejected(rel, f"unreadable: {_strerror(e)}", size)


class _Reader:
    """Reads a file once, feeding both digests, keeping the head and a tail window."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.total = 0
        self.eof = False
        self.tail = b""

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at end of file), hashed as they pass."""
        parts: list[bytes] = []
        want = n
        while want > 0:
            chunk = self._f.read(min(want, CHUNK_SIZE))
            if not chunk:
                self.eof = True
                break
            parts.append(chunk)
            want -= len(chunk)
        data = b"".join(parts)
        self.sha256.update(data)
        self.md5.update(data)
        self.total += len(data)
        self.tail = (self.tail + data[-TAIL_SIZE:])[-TAIL_SIZE:]
        return data

    def drain(self) -> None:
        while not self.eof:
            self.read(CHUNK_SIZE)


def _read_and_classify(w: _Walk, rel: str, f: IO[bytes], size: int) -> ScanEntry:
    reader = _Reader(f)
    head = reader.read(HEAD_SIZE)
    info: ProbedImage | None = None
    refusal = ""
    while True:
        try:
            info = w.probe(head)
            break
        except ImageRejected as e:
            refusal = e.reason
            # A signature is in the first bytes: more data cannot turn "not an image"
            # into an image. Anything else may be a header larger than the head.
            if _is_not_image(refusal) or reader.eof or len(head) >= MAX_HEAD_SIZE:
                break
            head += reader.read(min(len(head) * 3, MAX_HEAD_SIZE - len(head)))
    if info is None and _is_not_image(refusal) and not w.checksum_all:
        return ScanEntry(rel, size, None, None, Kind.NOT_IMAGE, reason=refusal)
    reader.drain()
    sha256, md5 = reader.sha256.hexdigest(), reader.md5.hexdigest()
    if info is None:
        kind = Kind.NOT_IMAGE if _is_not_image(refusal) else Kind.REJECTED
        return ScanEntry(rel, reader.total, sha256, md5, kind, reason=refusal)
    fmt = str(info.format).lower()  # the engine's format tokens: "jpeg", "png", "webp"...
    truncated = _truncation(fmt, head, reader.tail, reader.total)
    if truncated is not None:
        return ScanEntry(rel, reader.total, sha256, md5, Kind.REJECTED, reason=truncated)
    return ScanEntry(
        rel,
        reader.total,
        sha256,
        md5,
        Kind.IMAGE,
        format=fmt,
        width=int(info.width),
        height=int(info.height),
    )


def _truncation(fmt: str, head: bytes, tail: bytes, total: int) -> str | None:
    """A reason if the file visibly lacks its end, else None (see the module docstring)."""
    if fmt in ("jpeg", "mpo"):
        return None if b"\xff\xd9" in tail else "truncated JPEG"
    if fmt == "png":
        return None if b"IEND" in tail else "truncated PNG"
    if fmt == "webp" and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        declared = int.from_bytes(head[4:8], "little") + 8
        return None if total >= declared else "truncated WebP"
    return None


def _is_not_image(reason: str) -> bool:
    return reason.casefold().startswith("not an image")


def _junk_reason(name: str, *, is_dir: bool) -> str | None:
    known = JUNK_NAMES.get(name.casefold())
    if known is not None:
        return f"junk: {known}"
    if name.startswith("._"):
        return "junk: AppleDouble"
    if name.startswith("."):
        return "hidden directory" if is_dir else "hidden file"
    return None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _rejected(rel: str, reason: str, size: int = 0) -> ScanEntry:
    return ScanEntry(rel, size, None, None, Kind.REJECTED, reason=reason)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _displayable(text: str) -> str:
    """A printable stand-in for a name that is not UTF-8 (bytes shown as ``\\xNN``)."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def _mib(size: int) -> str:
    """A size as the imaging engine words it in its own limit's reason."""
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.3g} MiB"
    return f"{size / 1024:.3g} KiB" if size >= 1024 else f"{size} bytes"


def _strerror(e: OSError) -> str:
    return (e.strerror or type(e).__name__).lower()

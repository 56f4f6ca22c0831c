"""Put a chunk's originals in the primary bucket, many at a time, skipping those already there.

No rows are written here (``chunks`` records the outcomes); this module only moves
bytes, and wastes none of the S3 server's capacity:

* **Existence by listing.** A chunk's keys are consecutive in key order, so one paginated
  listing of the range they span (``StartAfter`` the first, stop past the last) tells
  which exist: one request per 1,000 keys instead of one HEAD per key; none at all when
  the prefix was empty at planning (a first migration). Local folders (the embedded
  default) are not listed in key order; there a ``stat`` per key is cheap.
* **Same content, no upload.** An object found at the key is compared by its ETag when
  that is an MD5 (every single-part upload, ``aws s3 cp`` of files under 8 MB included),
  else by size and then by reading it back (multipart ETags, local folders). A different
  object at the key is never overwritten: the file fails with that reason.
* **Never overwritten, even in a race.** The listing is a snapshot: another run, or a
  person, may store an object at one of our keys after it (or after planning found the
  prefix empty and nothing was listed). So every PUT is conditional (``If-None-Match:
  *``; a hard link on local folders): a 412 means an object arrived meanwhile, and it is
  looked at (HEAD) and judged as the listing would have judged it (present, or the file
  fails). An S3-compatible server without conditional writes (501 NotImplemented, or the
  header rejected) gets a HEAD of the key before a plain PUT instead, per file: a narrow
  window remains there, as with the listing alone (and a server that silently ignores
  the header is guarded by the listing alone, as before).
* **Concurrent uploads, one client.** Files go out in windows of ``UPLOAD_THREADS``
  (never more than the client's ``max_pool_connections``): each file of a window is
  opened and checked, then the window is written at once (``storage.write_files``: all
  together through the AWS Common Runtime, else on a thread pool that lives as long as
  the worker process, all threads sharing the storage's boto3 client), then each result
  is judged.
* **What is uploaded is what was scanned, in bounded memory.** Each file is opened
  inside the tree (a path that became a link out of it is refused), hashed in blocks and
  its sha256 checked against the scan, then uploaded from the open file in one PUT with
  the MD5 of that pass as Content-MD5 (through the CRT, which holds at most 32 MiB of a
  window's files in memory at once; a larger file is streamed by botocore): if the file
  changes in between, S3 refuses the bytes and the file fails as "changed since the
  scan". One PUT rather than a multipart upload keeps the ETag an MD5 (so later runs
  compare by the listing alone); files are bounded by the profile's ``max_bytes`` (the
  scan rejects larger ones), far below the 5 GB of a single PUT.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from django.core.files.storage import Storage

from pipeline import storage
from pipeline.errors import (
    ConditionalWriteUnsupported,
    ContentMismatch,
    PermanentError,
    StorageUnavailable,
)

__all__ = ["Outcome", "Upload", "content_type_for", "read_original", "same_listing", "transfer"]

_MD5 = re.compile(r"[0-9a-f]{32}")

CONTENT_TYPES = {
    "jpeg": "image/jpeg",
    "mpo": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "tiff": "image/tiff",
    "bmp": "image/bmp",
    "avif": "image/avif",
    "heif": "image/heif",
    "heic": "image/heic",
}


def content_type_for(fmt: str) -> str:
    return CONTENT_TYPES.get(fmt.lower(), "application/octet-stream")


@dataclass(frozen=True, slots=True)
class Upload:
    """One original to store: where it is read from, where it goes, what it must be."""

    item_id: int
    path: str  # relative to the source root, as scanned
    key: str
    sha256: str
    md5: str | None
    size: int
    format: str


@dataclass(frozen=True, slots=True)
class Outcome:
    item_id: int
    state: str  # "uploaded", "present" or "failed" (MigrationItem.State values)
    error: str = ""


def transfer(
    target: Storage,
    root: str,
    uploads: Sequence[Upload],
    *,
    threads: int,
    dry_run: bool = False,
    look: bool = True,
) -> list[Outcome]:
    """Store every upload that is not already in ``target``; one outcome per upload.

    ``dry_run`` checks what exists (reads only) and reports the rest as "uploaded".
    ``look=False`` skips the existence check: the caller knows the keys' prefix was empty
    (a first migration), so the listing could only find what this run wrote itself.
    Raises ``StorageUnavailable`` (transient) when the bucket cannot be reached; the
    caller retries the whole chunk, which is idempotent.
    """
    if not uploads:
        return []
    found = _existing(target, [u.key for u in uploads]) if look else {}
    outcomes: list[Outcome] = []
    missing: list[Upload] = []
    for u in uploads:
        info = found.get(u.key)
        if info is None:
            missing.append(u)
        else:
            outcomes.append(_found(target, info, u))
    if dry_run:
        return outcomes + [Outcome(u.item_id, "uploaded") for u in missing]
    client = _shared_client(target)
    window = _pool_size(client, threads)
    for start in range(0, len(missing), window):
        outcomes += _put_window(target, client, root, missing[start : start + window])
    return outcomes


def _existing(target: Storage, keys: list[str]) -> dict[str, storage.ObjectInfo]:
    """The objects among ``keys`` that exist (by listing their key range on S3)."""
    if not storage.is_s3(target):
        return {k: info for k in keys if (info := storage.head(target, k)) is not None}
    ordered = sorted(keys)
    first, last = ordered[0], ordered[-1]
    wanted = set(ordered)
    found: dict[str, storage.ObjectInfo] = {}
    prefix = _common_prefix(first, last)
    for info in storage.list_objects(target, prefix, start_after=first[:-1]):
        if info.key > last:
            break  # S3 lists in key order: nothing further is ours
        if info.key in wanted:
            found[info.key] = info
    return found


def _common_prefix(a: str, b: str) -> str:
    """The longest string both keys start with (character by character, not by folder)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def same_listing(info: storage.ObjectInfo, size: int, md5: str | None) -> bool:
    """Whether a listed object can be the content of this size and MD5, by the listing alone
    (its ETag is an MD5 for single-part uploads; multipart ETags and folders give sizes)."""
    if info.etag and _MD5.fullmatch(info.etag) and md5:
        return info.etag == md5
    return info.size == size


def _found(target: Storage, info: storage.ObjectInfo, u: Upload) -> Outcome:
    """What an object already at the upload's key means: ours already, or someone else's."""
    if _same_content(target, info, u):
        return Outcome(u.item_id, "present")
    return Outcome(u.item_id, "failed", f"a different object is already at {u.key}")


def _same_content(target: Storage, info: storage.ObjectInfo, u: Upload) -> bool:
    if not same_listing(info, u.size, u.md5):
        return False
    if info.etag and _MD5.fullmatch(info.etag) and u.md5:
        return True
    return storage.sha256(target, u.key) == u.sha256


CHANGED = "changed since the scan (run the migration again)"


def _put_window(target: Storage, client: Any, root: str, window: list[Upload]) -> list[Outcome]:
    """Upload a window of files at once: each opened and checked against the scan, then
    all written together (``storage.write_files``), then each result judged."""
    outcomes: list[Outcome] = []
    opened: list[tuple[Upload, IO[bytes], str]] = []
    try:
        for u in window:
            checked = _open_checked(root, u)
            if isinstance(checked, Outcome):
                outcomes.append(checked)
            else:
                opened.append((u, *checked))
        puts = [storage.FilePut(u.key, f, content_type_for(u.format), md5) for u, f, md5 in opened]
        results = storage.write_files(target, puts, if_absent=True, client=client)
        for (u, f, md5), result in zip(opened, results, strict=True):
            outcomes.append(_judge(target, client, u, f, md5, result))
    finally:
        for _, f, _ in opened:
            f.close()
    return outcomes


def _open_checked(root: str, u: Upload) -> tuple[IO[bytes], str] | Outcome:
    """The file open at its start and its MD5, if it still has the scanned content."""
    try:
        f = _open_inside(root, u.path)
    except OSError as e:
        return Outcome(u.item_id, "failed", f"unreadable at upload: {e.strerror or e}")
    except PermanentError as e:
        return Outcome(u.item_id, "failed", e.reason)
    try:
        sha256, md5 = _digests(f)
    except OSError as e:
        f.close()
        return Outcome(u.item_id, "failed", f"unreadable at upload: {e.strerror or e}")
    if sha256 != u.sha256:
        f.close()
        return Outcome(u.item_id, "failed", CHANGED)
    f.seek(0)
    return f, md5


def _judge(
    target: Storage, client: Any, u: Upload, f: IO[bytes], md5: str, result: bool | Exception
) -> Outcome:
    """The outcome of a conditional write (see the module docstring): stored; refused, so
    the object found is judged as one found by the listing; or failed."""
    if result is True:
        return Outcome(u.item_id, "uploaded")
    if isinstance(result, ContentMismatch):  # edited between the hashing and the upload
        return Outcome(u.item_id, "failed", CHANGED)
    if isinstance(result, ConditionalWriteUnsupported):
        # A server without conditional writes: look at the key, then write plainly. Only
        # another writer in the instant between the two can still be overwritten.
        if storage.head(target, u.key) is None:
            f.seek(0)
            params = {"content_type": content_type_for(u.format), "md5": md5, "client": client}
            try:
                storage.write_file(target, u.key, f, **params)
            except ContentMismatch:
                return Outcome(u.item_id, "failed", CHANGED)
            return Outcome(u.item_id, "uploaded")
    elif isinstance(result, Exception):
        raise result  # StorageUnavailable: the chunk is retried
    info = storage.head(target, u.key)
    if info is None:  # written and deleted again since: the chunk's retry sees anew
        raise StorageUnavailable(f"the object at {u.key!r} came and went during the upload")
    return _found(target, info, u)


def read_original(root: str, rel: str, sha256: str) -> bytes | None:
    """The bytes of a scanned file, if it still has the content scanned (its ``sha256``):
    for rendering what was uploaded without reading it back. None if unreadable or
    changed (the caller reads the bucket instead)."""
    try:
        with _open_inside(root, rel) as f:
            data = f.read()
    except (OSError, PermanentError):
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def _open_inside(root: str, rel: str) -> IO[bytes]:
    path = os.path.join(root, *rel.split("/"))
    real = os.path.realpath(path)
    if not real.startswith(root.rstrip(os.sep) + os.sep):
        raise PermanentError("link outside the tree")
    return open(real, "rb")  # the caller closes it


def _digests(f: IO[bytes]) -> tuple[str, str]:
    """sha256 and MD5 (hex) of the rest of ``f``, in one pass of blocks."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    while block := f.read(storage.BLOCK):
        sha256.update(block)
        md5.update(block)
    return sha256.hexdigest(), md5.hexdigest()


def _shared_client(target: Storage) -> Any:
    return target.connection.meta.client if storage.is_s3(target) else None


def _pool_size(client: Any, wanted: int) -> int:
    if client is None:
        return max(1, wanted)
    connections = getattr(client.meta.config, "max_pool_connections", None) or 10
    return max(1, min(wanted, connections))

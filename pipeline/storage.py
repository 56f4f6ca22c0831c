"""Moves bytes to and from the two buckets, and nothing else.

The buckets are Django ``STORAGES`` aliases (``primary`` and ``public`` by default), so
they are S3 (django-storages) in production and plain folders on the embedded default.
Every write is all-or-nothing: one S3 PUT, or a temporary file renamed into place, so an
interrupted write never leaves a half-written object behind.

Vendor errors are mapped to ours: a missing key becomes ``ObjectNotFound`` (permanent),
connection failures, timeouts, throttling and 5xx become ``StorageUnavailable``
(transient, retried by tasks); anything else is a bug and bubbles up.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage, Storage, storages

from pipeline import crt
from pipeline.errors import (
    ConditionalWriteUnsupported,
    ContentMismatch,
    ObjectNotFound,
    StorageUnavailable,
    UnsafePath,
)

logger = logging.getLogger(__name__)

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_TRANSIENT = {
    "500",
    "502",
    "503",
    "504",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ConditionalRequestConflict",  # 409: a conditional write raced another; try again
}


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a bucket listing tells about one object."""

    key: str
    size: int
    etag: str | None  # the MD5 hex for single-part S3 uploads; None on local folders


def primary() -> Storage:
    """The private bucket of pristine originals."""
    from pipeline.conf import pipeline_settings

    return storages[pipeline_settings()["PRIMARY_STORAGE"]]


def public() -> Storage:
    """The CDN-served bucket of optimized originals and variants."""
    from pipeline.conf import pipeline_settings

    return storages[pipeline_settings()["PUBLIC_STORAGE"]]


class StorageAlias:
    """Stands for the storage a pipeline setting names (``STORAGES[alias]``), looked up at
    each use.

    A ``FileField`` resolves its storage when its model class is created: resolving the
    alias then made importing any model with a ``MediaImageField`` (and so even
    ``manage.py check``) die with ``InvalidStorageError`` when the alias is missing,
    before the system checks could say what to add. Looking it up at each use also
    follows ``override_settings(STORAGES=...)``.
    """

    def __init__(self, setting: str) -> None:
        self.setting = setting

    def resolve(self) -> Storage:
        from pipeline.conf import pipeline_settings

        return storages[pipeline_settings()[self.setting]]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy/pickle probes must not resolve the storage
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    def __repr__(self) -> str:
        return f"<StorageAlias PIPELINE[{self.setting!r}]>"


# The default storage of every MediaImageField.
PRIMARY = StorageAlias("PRIMARY_STORAGE")


def prepare() -> None:
    """Make this thread's clients of both buckets now (botocore's, and the CRT's for
    PUTs), so that the first transfer does not pay for them. Never raises: a storage that
    cannot be set up fails its first task instead, with the reason."""
    for bucket in (primary, public):
        try:
            target = bucket()
            if is_s3(target):
                client = target.connection.meta.client
                if _crt_puts(target):
                    crt.prepare(client, target.bucket_name)
        except Exception:
            logger.warning(
                "could not prepare the %s bucket's client", bucket.__name__, exc_info=True
            )


def is_s3(storage: Storage) -> bool:
    """An S3 storage (django-storages): listed in key order, reached through a client."""
    # Look at the class: on the instance, ``connection`` is a property that creates a boto3
    # session and resource for the calling thread (slow, and wasted on a shared client).
    return hasattr(storage, "bucket_name") and hasattr(type(storage), "connection")


def check_key(key: str) -> str:
    """Refuse keys that could escape the bucket root or confuse S3 and CloudFront."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(f"unsafe object key: {key!r}")
    return key


@contextlib.contextmanager
def _translate(key: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError as e:
        raise ObjectNotFound(f"no object at {key!r}") from e
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _NOT_FOUND or status == "404":
            raise ObjectNotFound(f"no object at {key!r}") from e
        if code in _TRANSIENT or status in _TRANSIENT:
            raise StorageUnavailable(f"storage error {code or status} on {key!r}") from e
        raise
    except (BotoConnectionError, HTTPClientError, BotoCoreError) as e:
        # Connection refused/reset, timeouts, and other failures below the HTTP status.
        raise StorageUnavailable(f"storage unreachable for {key!r}: {type(e).__name__}") from e


def write(
    storage: Storage,
    key: str,
    data: bytes,
    *,
    content_type: str,
    cache_control: str | None = None,
    client: Any = None,
) -> None:
    """Store ``data`` at exactly ``key`` (overwriting), all or nothing.

    ``client``: a boto3 S3 client to use instead of the storage's per-thread connection,
    so that many threads can share one client (and its connection pool)."""
    check_key(key)
    with _translate(key):
        if is_s3(storage):
            params = _put_params(storage, Put(key, data, content_type, cache_control))
            _put_object(storage, client, key, data, params)
        elif isinstance(storage, FileSystemStorage):
            _atomic_write(Path(storage.path(key)), data)
        else:  # another Django storage: the best its API allows
            storage.delete(key)
            storage.save(key, ContentFile(data))


BLOCK = 1024 * 1024
"""Read size when bytes are streamed (files copied into folders, objects hashed)."""


def write_file(
    storage: Storage,
    key: str,
    f: IO[bytes],
    *,
    content_type: str,
    md5: str | None = None,
    if_absent: bool = False,
    client: Any = None,
) -> bool:
    """Store the open file ``f`` at exactly ``key``, streamed from it: never whole in
    memory, all or nothing. Returns True when stored.

    On S3 it is one PUT (ETag = MD5, up to S3's 5 GB limit of a single PUT). ``md5`` (hex)
    is what the bytes must hash to: S3 checks it (Content-MD5), a copy into a folder checks
    it before the rename; other bytes raise ``ContentMismatch`` and nothing is stored.

    ``if_absent``: never replace an object; False when one is already at the key. Atomic
    on S3 (a conditional write, ``If-None-Match: *``: of two writers racing for a key one
    gets 412) and on folders (a hard link, which never replaces a file); a server that
    does not support conditional writes raises ``ConditionalWriteUnsupported``.
    """
    check_key(key)
    with _translate(key):
        if is_s3(storage):
            params = _file_params(storage, FilePut(key, f, content_type, md5), if_absent)
            try:
                _put_object(storage, client, key, f, params)
            except ClientError as e:
                return _refused_write(e, key, if_absent=if_absent)
        elif isinstance(storage, FileSystemStorage):
            return _atomic_copy(Path(storage.path(key)), f, md5, if_absent=if_absent)
        else:  # another Django storage: the best its API allows
            if if_absent and storage.exists(key):
                return False
            storage.delete(key)
            storage.save(key, File(f))
    return True


def _put_params(storage: Storage, put: Put) -> dict[str, str]:
    """put_object's parameters for one of our writes of bytes (checked by Content-MD5)."""
    params = {"ContentType": put.content_type, "ContentMD5": _content_md5(put.data)}
    if put.cache_control:
        params["CacheControl"] = put.cache_control
    params.update(_write_acl(storage))
    return params


def _put_object(
    storage: Storage, client: Any, key: str, body: bytes | IO[bytes], params: dict[str, str]
) -> None:
    """One PUT: through the AWS Common Runtime where it can send it (``pipeline.crt``),
    else botocore's ``put_object``; the same request and errors either way."""
    client = client or storage.connection.meta.client
    if _crt_puts(storage) and crt.fits(body):
        crt.put(client, storage.bucket_name, _s3_name(storage, key), body, params)
    else:
        client.put_object(
            Bucket=storage.bucket_name, Key=_s3_name(storage, key), Body=body, **params
        )


def _crt_puts(storage: Storage) -> bool:
    """Whether PUTs to ``storage`` go through the CRT: when installed and not turned off,
    and nothing asks of the connections what only botocore is given (a proxy, or no
    certificate verification)."""
    from pipeline.conf import pipeline_settings

    config = getattr(storage, "client_config", None)
    return (
        pipeline_settings()["S3_PUTS"] == "auto"
        and crt.available()
        and getattr(storage, "verify", None) is not False
        and not getattr(storage, "proxies", None)
        and not getattr(config, "proxies", None)
        and not any(os.environ.get(name) for name in _BOTOCORE_ONLY_ENVIRONMENT)
    )


#: Proxies botocore reads from the environment and the CRT would not (a CA bundle it
#: would, from the client: ``crt._tls_options``).
_BOTOCORE_ONLY_ENVIRONMENT = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
)


@dataclass(frozen=True, slots=True)
class FilePut:
    """One open file for ``write_files``: stored from its position, checked against
    ``md5`` (hex) when given."""

    key: str
    file: IO[bytes]
    content_type: str
    md5: str | None = None


def write_files(
    storage: Storage,
    puts: Sequence[FilePut],
    *,
    if_absent: bool = False,
    client: Any = None,
    threads: int = 8,
) -> list[bool | Exception]:
    """``write_file`` for several open files at once, one result per file: True when
    stored, False when ``if_absent`` found an object, or the exception ``write_file``
    would have raised for it (``ConditionalWriteUnsupported``, ``ContentMismatch``,
    ``StorageUnavailable``...). Through the CRT they are sent together; elsewhere on this
    process's thread pool, sharing ``client``."""

    def one(p: FilePut) -> bool | Exception:
        try:
            return write_file(
                storage,
                p.key,
                p.file,
                content_type=p.content_type,
                md5=p.md5,
                if_absent=if_absent,
                client=client,
            )
        except Exception as e:
            return e

    if puts and is_s3(storage) and _crt_puts(storage):
        # Unsafe keys and files too large for the CRT's memory get write_file's answer.
        by_crt = [p for p in puts if crt.fits(p.file) and _safe_key(p.key)]
        failures = crt.put_many(
            client or storage.connection.meta.client,
            storage.bucket_name,
            [
                (_s3_name(storage, p.key), p.file, _file_params(storage, p, if_absent))
                for p in by_crt
            ],
        )
        results = {
            p.key: _write_result(p.key, failures.get(_s3_name(storage, p.key)), if_absent)
            for p in by_crt
        }
        rest = [p for p in puts if p.key not in results]
        if rest:
            pool = thread_pool(min(threads, len(rest)))
            results.update(zip((p.key for p in rest), pool.map(one, rest), strict=True))
        return [results[p.key] for p in puts]

    if len(puts) < 2:
        return [one(p) for p in puts]
    return list(thread_pool(min(threads, len(puts))).map(one, puts))


def _safe_key(key: str) -> bool:
    try:
        check_key(key)
    except UnsafePath:
        return False
    return True


def _write_result(key: str, error: Exception | None, if_absent: bool) -> bool | Exception:
    """What ``write_file`` returns (or raises, returned here) for a PUT's ``error``."""
    if error is None:
        return True
    try:
        with _translate(key):
            if isinstance(error, ClientError):
                return _refused_write(error, key, if_absent=if_absent)
            raise error
    except Exception as e:
        return e


def _file_params(storage: Storage, put: FilePut, if_absent: bool) -> dict[str, str]:
    params = {"ContentType": put.content_type}
    if put.md5:
        params["ContentMD5"] = base64.b64encode(bytes.fromhex(put.md5)).decode()
    if if_absent:
        params["IfNoneMatch"] = "*"
    params.update(_write_acl(storage))
    return params


def _refused_write(e: ClientError, key: str, *, if_absent: bool) -> bool:
    """False for a conditional write that found an object; raises for anything else."""
    error = e.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ("BadDigest", "InvalidDigest"):
        raise ContentMismatch(f"the bytes sent to {key!r} changed while read") from e
    if if_absent and (code == "PreconditionFailed" or status == 412):
        return False
    rejected = code == "InvalidArgument" and "if-none-match" in str(error).lower()
    if if_absent and (code == "NotImplemented" or status == 501 or rejected):
        raise ConditionalWriteUnsupported(f"no conditional writes for {key!r}: {code}") from e
    raise e


@dataclass(frozen=True, slots=True)
class Put:
    """One object for ``write_many``."""

    key: str
    data: bytes
    content_type: str
    cache_control: str | None = None


def write_many(storage: Storage, puts: Sequence[Put], *, threads: int = 8) -> None:
    """Write several objects, concurrently on S3: all at once through the CRT, else one
    shared botocore client (thread-safe, its own connection pool) on this process's thread
    pool. Each write is still all-or-nothing."""
    if len(puts) > 1 and is_s3(storage) and _crt_puts(storage):
        failures = crt.put_many(
            storage.connection.meta.client,
            storage.bucket_name,
            [(_s3_name(storage, check_key(p.key)), p.data, _put_params(storage, p)) for p in puts],
        )
        for key, error in failures.items():
            with _translate(key):
                raise error
        return
    if len(puts) < 2 or not is_s3(storage):
        for p in puts:
            write(
                storage, p.key, p.data, content_type=p.content_type, cache_control=p.cache_control
            )
        return
    client = storage.connection.meta.client
    size = min(threads, len(puts), client.meta.config.max_pool_connections or 10)
    list(
        thread_pool(size).map(
            lambda p: write(
                storage,
                p.key,
                p.data,
                content_type=p.content_type,
                cache_control=p.cache_control,
                client=client,
            ),
            puts,
        )
    )


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def thread_pool(size: int) -> ThreadPoolExecutor:
    """A thread pool per process and size, kept for the life of the (worker) process, so
    transfers do not pay for starting threads; a forked child never uses its parent's."""
    key = (os.getpid(), size)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ThreadPoolExecutor(size, thread_name_prefix="storage")
        return pool


def read(storage: Storage, key: str) -> bytes:
    """The bytes at ``key``; ``ObjectNotFound`` when there is none."""
    check_key(key)
    with _translate(key):
        if is_s3(storage):
            response = storage.connection.meta.client.get_object(
                Bucket=storage.bucket_name, Key=_s3_name(storage, key)
            )
            return response["Body"].read()
        with storage.open(key, "rb") as f:
            return f.read()


def sha256(storage: Storage, key: str) -> str:
    """The sha256 (hex) of the object at ``key``, streamed; ``ObjectNotFound`` if none."""
    check_key(key)
    digest = hashlib.sha256()
    with _translate(key):
        if is_s3(storage):
            response = storage.connection.meta.client.get_object(
                Bucket=storage.bucket_name, Key=_s3_name(storage, key)
            )
            for block in response["Body"].iter_chunks(BLOCK):
                digest.update(block)
        else:
            with storage.open(key, "rb") as f:
                while block := f.read(BLOCK):
                    digest.update(block)
    return digest.hexdigest()


def delete(storage: Storage, key: str) -> None:
    """Remove ``key``; a key that is already gone is not an error (deletes are retried)."""
    check_key(key)
    with _translate(key):
        storage.delete(key)


def head(storage: Storage, key: str) -> ObjectInfo | None:
    """Size and ETag of ``key``, or None when it does not exist."""
    check_key(key)
    try:
        with _translate(key):
            if is_s3(storage):
                r = storage.connection.meta.client.head_object(
                    Bucket=storage.bucket_name, Key=_s3_name(storage, key)
                )
                return ObjectInfo(key, int(r["ContentLength"]), r["ETag"].strip('"'))
            return ObjectInfo(key, storage.size(key), None)
    except ObjectNotFound:
        return None


def list_objects(
    storage: Storage, prefix: str = "", *, start_after: str = ""
) -> Iterator[ObjectInfo]:
    """Every object under ``prefix``, paginated: one request per 1,000 keys on S3.

    ``start_after``: only keys after it. On S3 the listing is in key order, so a caller
    that stops iterating past the last key it wants lists just a range of a large prefix.
    """
    with _translate(prefix or "/"):
        if is_s3(storage):
            client = storage.connection.meta.client
            paginator = client.get_paginator("list_objects_v2")
            root = _s3_name(storage, "")
            params = {"Bucket": storage.bucket_name, "Prefix": root + prefix}
            if start_after:
                params["StartAfter"] = root + start_after
            for page in paginator.paginate(**params):
                for obj in page.get("Contents", ()):
                    key = obj["Key"][len(root) :]
                    yield ObjectInfo(key, int(obj["Size"]), obj["ETag"].strip('"'))
            return
        base = Path(storage.location)  # type: ignore[attr-defined]
        start = base / prefix.rsplit("/", 1)[0] if "/" in prefix else base
        if not start.is_dir():
            return
        for dirpath, _dirs, files in os.walk(start):
            for name in sorted(files):
                if name.startswith(".tmp-"):
                    continue
                path = Path(dirpath, name)
                key = path.relative_to(base).as_posix()
                if key.startswith(prefix) and key > start_after:
                    yield ObjectInfo(key, path.stat().st_size, None)


def url(storage: Storage, key: str) -> str:
    """The public URL of ``key`` (the CDN domain on S3); computed, no request made."""
    return storage.url(key)


_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")


def urls(storage: Storage, keys: Sequence[str]) -> list[str]:
    """The public URLs of several keys, computed as ``url`` does but asking the storage
    once per folder: without a custom domain, django-storages builds each S3 URL through
    botocore (an unsigned presigned URL, then stripped), a visible CPU cost per image.
    Another key of the same folder differs only by its last segment, swapped in when the
    URL has no query string (nothing signed) and the name needs no quoting."""
    result: list[str] = []
    folders: dict[str, str] = {}  # folder -> the URL of that folder, up to its last "/"
    for key in keys:
        folder, _, name = key.rpartition("/")
        base = folders.get(folder)
        if base is not None and _PLAIN_NAME.fullmatch(name):
            result.append(base + name)
            continue
        found = url(storage, key)
        result.append(found)
        if "?" not in found and found.endswith("/" + name) and _PLAIN_NAME.fullmatch(name):
            folders[folder] = found[: -len(name)]
    return result


def md5_hex(data: bytes) -> str:
    """The MD5 that S3 reports as the ETag of a single-part upload."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _content_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _s3_name(storage: Storage, key: str) -> str:
    location = getattr(storage, "location", "") or ""
    return f"{location.strip('/')}/{key}" if location else key


def _write_acl(storage: Storage) -> dict[str, str]:
    acl = getattr(storage, "default_acl", None)
    return {"ACL": acl} if acl else {}


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _atomic_copy(path: Path, source: IO[bytes], md5: str | None, *, if_absent: bool) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as f:
            while block := source.read(BLOCK):
                digest.update(block)
                f.write(block)
        if md5 and digest.hexdigest() != md5:
            raise ContentMismatch(f"the bytes copied to {path.name!r} changed while read")
        os.chmod(tmp, 0o644)
        if not if_absent:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # unlike a rename, never replaces an existing file
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

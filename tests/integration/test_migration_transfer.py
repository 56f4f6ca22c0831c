"""Uploading a chunk's originals against moto over HTTP: what exists is found by listing,
compared by content, never overwritten when different; the rest is uploaded once."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from pipeline import crt, storage
from pipeline.bulk.transfer import Upload, transfer
from pipeline.errors import ContentMismatch
from tests.services import PRIMARY_BUCKET

pytestmark = pytest.mark.integration


def upload(root: Path, i: int, key: str, data: bytes) -> Upload:
    path = root / f"f{i}.jpg"
    path.write_bytes(data)
    return Upload(
        item_id=i,
        path=path.name,
        key=key,
        sha256=hashlib.sha256(data).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
        size=len(data),
        format="jpeg",
    )


def test_existing_objects_are_found_by_listing_and_compared(
    s3: Any, clean_buckets: None, tmp_path: Path
) -> None:
    same = upload(tmp_path, 1, "legacy/t/b-same.jpg", b"same bytes")
    other = upload(tmp_path, 2, "legacy/t/c-other.jpg", b"my bytes")
    big = upload(tmp_path, 3, "legacy/t/d-multipart.jpg", b"multipart copy")
    new = upload(tmp_path, 4, "legacy/t/e-new.jpg", b"new bytes")
    changed = upload(tmp_path, 5, "legacy/t/f-changed.jpg", b"scanned bytes")
    (tmp_path / "f5.jpg").write_bytes(b"edited since the scan")
    s3.put_object(Bucket=PRIMARY_BUCKET, Key=same.key, Body=b"same bytes")
    s3.put_object(Bucket=PRIMARY_BUCKET, Key=other.key, Body=b"someone else's bytes")
    # An object uploaded in parts has an ETag that is not an MD5: compared by reading it.
    part = s3.create_multipart_upload(Bucket=PRIMARY_BUCKET, Key=big.key)
    etag = s3.upload_part(
        Bucket=PRIMARY_BUCKET, Key=big.key, UploadId=part["UploadId"], PartNumber=1,
        Body=b"multipart copy",
    )["ETag"]  # fmt: skip
    s3.complete_multipart_upload(
        Bucket=PRIMARY_BUCKET,
        Key=big.key,
        UploadId=part["UploadId"],
        MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]},
    )
    # Outside the chunk's key range: never looked at, never touched.
    s3.put_object(Bucket=PRIMARY_BUCKET, Key="legacy/t/a-before.jpg", Body=b"x")
    s3.put_object(Bucket=PRIMARY_BUCKET, Key="legacy/t/z-after.jpg", Body=b"x")

    uploads = [same, other, big, new, changed]
    done = transfer(storage.primary(), str(tmp_path), uploads, threads=4)
    outcomes = {o.item_id: o for o in done}

    assert {i: o.state for i, o in outcomes.items()} == {
        1: "present",
        2: "failed",
        3: "present",
        4: "uploaded",
        5: "failed",
    }
    assert outcomes[2].error == f"a different object is already at {other.key}"
    assert "changed since the scan" in outcomes[5].error
    body = s3.get_object(Bucket=PRIMARY_BUCKET, Key=other.key)["Body"].read()
    assert body == b"someone else's bytes"
    assert s3.get_object(Bucket=PRIMARY_BUCKET, Key=new.key)["Body"].read() == b"new bytes"
    assert "legacy/t/f-changed.jpg" not in {
        o["Key"] for o in s3.list_objects_v2(Bucket=PRIMARY_BUCKET)["Contents"]
    }


def test_dry_run_only_reads(s3: Any, clean_buckets: None, tmp_path: Path) -> None:
    new = upload(tmp_path, 1, "legacy/u/new.jpg", b"new bytes")
    outcomes = transfer(storage.primary(), str(tmp_path), [new], threads=2, dry_run=True)
    assert [o.state for o in outcomes] == ["uploaded"]
    assert "Contents" not in s3.list_objects_v2(Bucket=PRIMARY_BUCKET)


def test_a_large_original_is_streamed_from_its_file(
    s3: Any, clean_buckets: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file larger than the CRT may hold in memory is streamed by botocore from the open
    file (the CRT reads bodies whole: test_crt_puts bounds what it holds)."""
    monkeypatch.setattr(crt, "MAX_IN_MEMORY", 1024 * 1024)
    data = os.urandom(6 * 1024 * 1024 + 7)
    big = upload(tmp_path, 1, "legacy/v/big.jpg", data)
    target = storage.primary()
    bodies: list[object] = []
    md5s: list[str] = []

    def record(params: dict[str, Any], **kwargs: Any) -> None:
        bodies.append(params["Body"])
        md5s.append(params.get("ContentMD5", ""))

    events = target.connection.meta.client.meta.events  # the client transfer() shares
    events.register("before-parameter-build.s3.PutObject", record)
    try:
        [outcome] = transfer(target, str(tmp_path), [big], threads=2)
    finally:
        events.unregister("before-parameter-build.s3.PutObject", record)

    assert outcome.state == "uploaded"
    [body] = bodies
    assert not isinstance(body, bytes | bytearray) and hasattr(body, "read")  # the open file
    # S3 refuses the bytes if the file changed after it was hashed (moto does not check).
    assert md5s == [base64.b64encode(hashlib.md5(data).digest()).decode()]
    assert s3.get_object(Bucket=PRIMARY_BUCKET, Key=big.key)["Body"].read() == data
    etag = s3.head_object(Bucket=PRIMARY_BUCKET, Key=big.key)["ETag"].strip('"')
    assert etag == big.md5  # one PUT: later runs compare by the listing alone


def test_a_file_not_matching_its_md5_is_not_stored(folder_buckets: Path, tmp_path: Path) -> None:
    # (On S3 the server checks the Content-MD5 sent with the PUT; moto does not.)
    target = storage.primary()
    source = tmp_path / "f.jpg"
    source.write_bytes(b"edited while it was read")
    with open(source, "rb") as f, pytest.raises(ContentMismatch):
        storage.write_file(
            target, "legacy/w/f.jpg", f, content_type="image/jpeg", md5=storage.md5_hex(b"was")
        )
    assert storage.head(target, "legacy/w/f.jpg") is None
    assert not [p for p in (folder_buckets / "primary").rglob("*") if p.is_file()]  # no temp
    with open(source, "rb") as f:
        storage.write_file(target, "legacy/w/f.jpg", f, content_type="image/jpeg")
    assert storage.read(target, "legacy/w/f.jpg") == b"edited while it was read"


@pytest.mark.parametrize("look", [True, False], ids=["after-the-listing", "prefix-was-empty"])
def test_an_object_written_at_the_key_meanwhile_is_never_overwritten(
    look: bool, s3: Any, clean_buckets: None, tmp_path: Path
) -> None:
    """Another run (or a person) stores objects at our keys after this run looked: after
    the chunk's listing, or after planning found the prefix empty (no listing at all)."""
    mine = upload(tmp_path, 1, "legacy/x/a-mine.jpg", b"my bytes")
    same = upload(tmp_path, 2, "legacy/x/b-same.jpg", b"the same bytes")
    new = upload(tmp_path, 3, "legacy/x/c-new.jpg", b"new bytes")
    target = storage.primary()

    def race(**kwargs: Any) -> None:
        s3.put_object(Bucket=PRIMARY_BUCKET, Key=mine.key, Body=b"the other run's bytes")
        s3.put_object(Bucket=PRIMARY_BUCKET, Key=same.key, Body=b"the same bytes")

    events = target.connection.meta.client.meta.events
    if look:
        events.register("after-call.s3.ListObjectsV2", race)
    else:
        race()
    try:
        done = transfer(target, str(tmp_path), [mine, same, new], threads=4, look=look)
    finally:
        events.unregister("after-call.s3.ListObjectsV2", race)

    outcomes = {o.item_id: (o.state, o.error) for o in done}
    assert outcomes == {
        1: ("failed", f"a different object is already at {mine.key}"),
        2: ("present", ""),
        3: ("uploaded", ""),
    }
    body = s3.get_object(Bucket=PRIMARY_BUCKET, Key=mine.key)["Body"].read()
    assert body == b"the other run's bytes"
    assert s3.get_object(Bucket=PRIMARY_BUCKET, Key=new.key)["Body"].read() == b"new bytes"


def test_without_conditional_writes_the_key_is_looked_at_first(
    s3: Any, clean_buckets: None, tmp_path: Path, settings: Any
) -> None:
    """An S3-compatible server that refuses If-None-Match (501 NotImplemented): the object
    at each key is looked up before the plain PUT, as a listing would have found it. (The
    501 is made by a botocore hook; test_crt_puts shows the CRT's PUT raises the same.)"""
    settings.PIPELINE = {**settings.PIPELINE, "S3_PUTS": "botocore"}
    mine = upload(tmp_path, 1, "legacy/y/a-mine.jpg", b"my bytes")
    new = upload(tmp_path, 2, "legacy/y/b-new.jpg", b"new bytes")
    s3.put_object(Bucket=PRIMARY_BUCKET, Key=mine.key, Body=b"someone else's bytes")
    target = storage.primary()
    refused: list[str] = []

    def not_implemented(params: dict[str, Any], **kwargs: Any) -> Any:
        if "If-None-Match" not in params["headers"]:
            return None
        refused.append(params["url_path"])
        error = {"Code": "NotImplemented", "Message": "A header you provided implies"}
        meta = {"HTTPStatusCode": 501}
        return AWSResponse(params["url"], 501, {}, None), {"Error": error, "ResponseMetadata": meta}

    events = target.connection.meta.client.meta.events
    events.register("before-call.s3.PutObject", not_implemented)
    try:
        done = transfer(target, str(tmp_path), [mine, new], threads=2, look=False)
    finally:
        events.unregister("before-call.s3.PutObject", not_implemented)

    assert refused  # the conditional write was tried
    outcomes = {o.item_id: (o.state, o.error) for o in done}
    assert outcomes == {
        1: ("failed", f"a different object is already at {mine.key}"),
        2: ("uploaded", ""),
    }
    body = s3.get_object(Bucket=PRIMARY_BUCKET, Key=mine.key)["Body"].read()
    assert body == b"someone else's bytes"
    assert s3.get_object(Bucket=PRIMARY_BUCKET, Key=new.key)["Body"].read() == b"new bytes"


def test_a_folder_bucket_never_replaces_a_file_either(folder_buckets: Path, tmp_path: Path) -> None:
    target = storage.primary()
    storage.write(target, "legacy/z/a.jpg", b"someone else's bytes", content_type="image/jpeg")
    mine = upload(tmp_path, 1, "legacy/z/a.jpg", b"my bytes")
    new = upload(tmp_path, 2, "legacy/z/b.jpg", b"new bytes")

    done = transfer(target, str(tmp_path), [mine, new], threads=2, look=False)

    outcomes = {o.item_id: (o.state, o.error) for o in done}
    assert outcomes == {
        1: ("failed", f"a different object is already at {mine.key}"),
        2: ("uploaded", ""),
    }
    assert storage.read(target, mine.key) == b"someone else's bytes"
    assert storage.read(target, new.key) == b"new bytes"
    files = {p.name for p in (folder_buckets / "primary").rglob("*") if p.is_file()}
    assert files == {"a.jpg", "b.jpg"}  # no temporary file left

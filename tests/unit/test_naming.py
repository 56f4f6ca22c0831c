"""Standardized keys: deterministic, lower-case ASCII, no escapes."""

from __future__ import annotations

import unicodedata

import pytest

from pipeline import naming
from pipeline.errors import UnsafePath
from pipeline.storage import check_key


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("IMG 0001 (Copy).JPG", "img-0001-copy"),
        ("Café au lait.jpeg", "cafe-au-lait"),
        (unicodedata.normalize("NFD", "Café au lait.jpeg"), "cafe-au-lait"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\Fünf Tage.png", "funf-tage"),
        ("%%%.jpg", "file"),
        ("x" * 300 + ".jpg", "x" * 60),
    ],
)
def test_slugify_filename(name, slug):
    assert naming.slugify_filename(name) == slug


def test_original_name_is_content_addressed_and_short():
    a = naming.original_name("photos", "Holiday Photo.JPG", "ab" * 32)
    assert a == "photos/holiday-photo-abababababab.jpg"
    assert naming.original_name("photos", "Holiday Photo.JPG", "cd" * 32) != a
    assert len(naming.original_name("p", "y" * 500 + ".jpeg", "ef" * 32)) < 100


def test_public_folder_is_deterministic_and_spread():
    one = naming.public_folder(
        prefix="media", model_label="demo.Photo", pk=42, source_name="photos/a-1.jpg"
    )
    assert one == naming.public_folder(
        prefix="media", model_label="demo.Photo", pk=42, source_name="photos/a-1.jpg"
    )
    prefix, shard, identity, slug = one.split("/")
    assert (prefix, identity) == ("media", "demo.photo-42")
    assert slug.startswith("a-1-") and len(slug) == len("a-1-") + 8
    assert len(shard) == 2 and int(shard, 16) >= 0
    shards = {
        naming.public_folder(prefix="m", model_label="a.B", pk=i, source_name="x").split("/")[1]
        for i in range(200)
    }
    assert len(shards) > 50  # keys spread across many prefixes
    assert naming.output_key(one, "w640", "webp") == f"{one}/w640.webp"


def test_sources_with_the_same_basename_get_their_own_folders():
    """Two sources of one row that slugify alike never share outputs (issue 10)."""
    folders = {
        naming.public_folder(prefix="media", model_label="pipeline.MediaAsset", pk=7, source_name=n)
        for n in ("legacy/2019/img-0001.jpg", "legacy/2020/img-0001.png", "legacy/img_0001.jpg")
    }
    assert len(folders) == 3


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a\\b", "./a", "a/."])
def test_unsafe_keys_are_refused(key):
    with pytest.raises(UnsafePath):
        check_key(key)

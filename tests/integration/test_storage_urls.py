"""``storage.urls``: the storage's own URLs, asked once per folder."""

from __future__ import annotations

import pytest

from pipeline import storage

pytestmark = pytest.mark.integration

KEYS = [
    "media/pipeline-mediaasset/12/a photo/w640.webp",
    "media/pipeline-mediaasset/12/a photo/w320.avif",
    "media/pipeline-mediaasset/12/a photo/original.jpg",
    "media/x/été/a b.jpg",  # a name that needs quoting: asked of the storage
    "media/x/été/c.jpg",
    "media/y/d.jpg",
]


@pytest.mark.parametrize("bucket", [storage.public, storage.primary])
def test_urls_are_what_the_storage_gives_for_each_key(bucket) -> None:
    target = bucket()
    urls = storage.urls(target, KEYS)
    if bucket is storage.public:
        assert urls == [storage.url(target, k) for k in KEYS]
    else:  # signed, expiring URLs: each signed for its own key, never derived
        assert [u.split("?")[0] for u in urls] == [
            storage.url(target, k).split("?")[0] for k in KEYS
        ]
        assert all("?" in u for u in urls)

"""What old rows hold, turned into the legacy path they refer to (or a reason why not)."""

from __future__ import annotations

import unicodedata

import pytest

from pipeline.bulk.references import (
    ESCAPES_ROOT,
    Match,
    PathIndex,
    legacy_candidates,
    lookup_key,
    normalize_reference,
    resolve_reference,
)


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


# The legacy tree, as scanned (names exactly as on disk).
ON_DISK = [
    "a/B c.JPG",
    "photos/" + nfd("café.jpg"),  # written by a Mac: NFD
    "Photos/Summer 2019/IMG_0001.JPG",
    "media/inside-a-media-folder.jpg",  # a real folder called "media" in MEDIA_ROOT
    "weird/100%25 real.jpg",  # a literal "%25" in a file name
    "products/logo.gif",
    "x/Dup.jpg",
    "x/dup.jpg",  # same name but case: two files on a case-sensitive disk
]
INDEX = PathIndex(ON_DISK)


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("a/B c.JPG", "a/B c.JPG"),  # as a FileField stores it
        ("/media/a/B c.JPG", "a/B c.JPG"),  # with MEDIA_URL
        ("media/a/B c.JPG", "a/B c.JPG"),  # MEDIA_URL without its slash
        ("/media/a/B%20c.JPG", "a/B c.JPG"),  # URL-encoded
        ("https://old.example.com/media/a/B%20c.JPG", "a/B c.JPG"),  # absolute URL
        ("http://OLD.example.com/media/a/B%20c.JPG?v=2#top", "a/B c.JPG"),  # cache buster
        ("//cdn.example.net/media/a/B%20c.JPG", "a/B c.JPG"),  # scheme-relative
        ("/a/B c.JPG", "a/B c.JPG"),  # leading slash, no MEDIA_URL
        ("a\\B c.JPG", "a/B c.JPG"),  # Windows separators
        ("\\media\\a\\B c.JPG", "a/B c.JPG"),
        ("./a/./B c.JPG", "a/B c.JPG"),  # dot segments
        ("a/../a/B c.JPG", "a/B c.JPG"),  # ".." that stays inside
        ("  a/B c.JPG \n", "a/B c.JPG"),  # stray whitespace
        ("A/b C.jpg", "a/B c.JPG"),  # another case
        ("PHOTOS/CAFÉ.JPG", "photos/" + nfd("café.jpg")),  # NFC value, NFD file, case
        ("/media/photos/caf%C3%A9.jpg", "photos/" + nfd("café.jpg")),  # encoded NFC
        ("media/inside-a-media-folder.jpg", "media/inside-a-media-folder.jpg"),
        ("weird/100%25 real.jpg", "weird/100%25 real.jpg"),  # raw first: "%25" is literal
        ("/media/weird/100%2525%20real.jpg", "weird/100%25 real.jpg"),  # URL of that name
        ("photos/café.jpg", "photos/" + nfd("café.jpg")),
        ("x/Dup.jpg", "x/Dup.jpg"),  # exact beats folded ...
        ("x/dup.jpg", "x/dup.jpg"),  # ... for each of the two
    ],
)
def test_each_style_resolves_to_the_file(value: str, path: str) -> None:
    res = resolve_reference(value, INDEX)
    assert res.status.linked, res
    assert res.path == path


def test_exact_and_folded_matches_are_told_apart() -> None:
    assert resolve_reference("a/B c.JPG", INDEX).status is Match.EXACT
    assert resolve_reference("a/b c.jpg", INDEX).status is Match.FOLDED
    assert resolve_reference(nfc("photos/café.jpg"), INDEX).status is Match.FOLDED
    assert resolve_reference(nfd("photos/café.jpg"), INDEX).status is Match.EXACT


def test_a_folded_match_on_two_files_is_ambiguous_not_guessed() -> None:
    res = resolve_reference("X/DUP.JPG", INDEX)
    assert res.status is Match.AMBIGUOUS and res.path is None
    assert res.matches == ("x/Dup.jpg", "x/dup.jpg")
    assert "2 files" in (res.reason or "")


@pytest.mark.parametrize(
    "value",
    [
        "a/missing.jpg",
        "https://old.example.com/media/gone/away.png",
        "/static/css/site.css",
        "a/B c.png",  # another extension is another file
    ],
)
def test_dangling_values_are_reported(value: str) -> None:
    res = resolve_reference(value, INDEX)
    assert (res.status, res.path) == (Match.DANGLING, None)
    assert res.reason == "no such file in the legacy tree"


@pytest.mark.parametrize(
    "value",
    [
        "../etc/passwd",
        "../../../../etc/passwd",
        "a/../../etc/passwd",
        "/media/../../etc/passwd",
        "https://old.example.com/media/../../../etc/passwd",
        "..\\..\\windows\\win.ini",
        "%2e%2e/%2e%2e/etc/passwd",  # encoded dots
        "a/%2e%2e/%2e%2e/etc/passwd",
        "/media/..%2F..%2Fetc/passwd",  # encoded slash
    ],
)
def test_values_that_climb_out_of_the_root_match_nothing(value: str) -> None:
    ref = normalize_reference(value)
    assert ref.candidates == () and ref.reason == ESCAPES_ROOT
    res = resolve_reference(value, PathIndex(["etc/passwd", "windows/win.ini"]))
    assert (res.status, res.path, res.reason) == (Match.INVALID, None, ESCAPES_ROOT)


@pytest.mark.parametrize(
    ("value", "reason"),
    [("", "empty value"), ("   ", "empty value"), ("/media/", "not a file path"),
     ("photos/", "not a file path"), ("a\x00b.jpg", "not a file path")],
)  # fmt: skip
def test_values_that_name_no_file_are_invalid(value: str, reason: str) -> None:
    res = resolve_reference(value, INDEX)
    assert (res.status, res.reason) == (Match.INVALID, reason)


def test_candidates_are_ordered_by_likelihood() -> None:
    # A relative value is what a FileField stored: raw first, then decoded.
    assert legacy_candidates("a/b%20c.jpg") == ["a/b%20c.jpg", "a/b c.jpg"]
    # A URL is percent-encoded: decoded first, MEDIA_URL stripped before it is kept.
    assert legacy_candidates("/media/a/b%20c.jpg")[:2] == ["a/b c.jpg", "a/b%20c.jpg"]
    assert legacy_candidates("media/a.jpg") == ["media/a.jpg", "a.jpg"]
    assert legacy_candidates("photos/a.jpg?v=3") == ["photos/a.jpg?v=3", "photos/a.jpg"]


def test_media_url_may_be_absolute_or_custom() -> None:
    assert legacy_candidates(
        "https://cdn.example.com/uploads/a.jpg", media_url="https://cdn.example.com/uploads/"
    ) == ["a.jpg"]
    assert legacy_candidates("/files/a/b.jpg", media_url="/files/")[0] == "a/b.jpg"
    assert legacy_candidates("/a/b.jpg", media_url="/")[0] == "a/b.jpg"


def test_old_absolute_media_roots_are_stripped() -> None:
    roots = ["/srv/old-site/public/uploads", "C:\\inetpub\\site\\media"]
    assert legacy_candidates("/srv/old-site/public/uploads/a/b.jpg", media_roots=roots)[0] == (
        "a/b.jpg"
    )
    assert legacy_candidates("c:\\InetPub\\site\\media\\x.jpg", media_roots=roots) == ["x.jpg"]
    # Without the root, a filesystem path under a folder named like MEDIA_URL still works.
    assert legacy_candidates("/var/www/site/media/a/b.jpg")[0] == "a/b.jpg"


def test_lookup_key_folds_case_and_normal_form_only() -> None:
    assert lookup_key("Photos/Café.JPG") == lookup_key(nfd("photos/cafe\u0301.jpg"))
    assert lookup_key("STRASSE.jpg") == lookup_key("straße.jpg")  # full case folding
    assert lookup_key("①.jpg") != lookup_key("1.jpg")  # compatibility forms differ
    assert lookup_key("a/b.jpg") != lookup_key("a/b.jpeg")
    assert lookup_key(nfd("Ä")) == nfc("ä")  # keys are NFC


def test_path_index_is_exact_and_folded() -> None:
    index = PathIndex(["A.jpg", "a.jpg", "b.jpg", "b.jpg"])
    assert index.exact("A.jpg") and not index.exact("B.jpg")
    assert index.folded(lookup_key("A.JPG")) == ("A.jpg", "a.jpg")
    assert index.folded(lookup_key("B.JPG")) == ("b.jpg",)
    assert index.folded("missing") == ()

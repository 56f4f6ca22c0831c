"""Generate a messy legacy MEDIA_ROOT from real photos, and say exactly what is in it.

The demo, the tests and the benchmark need the same thing: a tree that looks like ten
years of an old Django site (nested folders, spaces and capitals, ``.JPG``/``.jpeg``/
``.Jpg``, names in NFC *and* NFD, ``file (1).jpg`` copies, OS litter, text and HTML files,
a truncated JPEG, an empty file, links out of the tree and round a loop, a PNG with
transparency, a GIF) and the strings old rows held to point at it, in every spelling
``pipeline.bulk.references`` must understand, including some that point at nothing.

Photos are real (``photos_dir``). The fixed tree has them at their own sizes, as a site
holds them: a camera file untouched, a sideways shot with its EXIF orientation, the others
cropped a little and re-encoded (about 4 MB with the photos in ``demo/photos``), so
processing it makes every variant width. Bulk images (``n``) are shrunk to 96-640 px so a
tree of thousands stays light (2,000 images about 40 MB). Without ``photos_dir`` the
pictures are drawn (soft shapes over a gradient, with grain, so they compress like
photos). Every legacy value fits in ``max_length`` characters, as it had to in the old
rows' column. Everything derives from ``seed``: the same seed and photos give the same
bytes under the same names.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import quote

from PIL import Image, ImageDraw, ImageFilter, ImageOps

from pipeline.bulk.references import lookup_key
from pipeline.bulk.scan import Kind

__all__ = ["OLD_SITE", "LegacyValue", "SampleManifest", "build_sample_tree"]

OLD_SITE = "https://old.example.com"
"""The host old rows used in absolute URLs."""

MEDIA_URL = "/media/"
"""The old site's MEDIA_URL, as the legacy values spell it."""

BASE_SIZE = 640
SIZES = (96, 128, 160, 200, 240, 320, 400, 480, 560, 640)
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
JPEG_SUFFIXES = (".jpg", ".jpeg")
MAX_LENGTH = 100
"""Longest legacy value by default: a FileField's column (``max_length=100``)."""


@dataclass(frozen=True, slots=True)
class LegacyValue:
    """A string an old row held, the style it is written in, and what it should find.

    ``path`` is the scan path it must resolve to (None: it must be reported, never
    linked: dangling, or escaping the root). A value may resolve to a path that is not
    an image (``target_kind``): phase 2 reports those as pointing at a rejected file.
    """

    value: str
    style: str
    path: str | None
    target_kind: str | None = None


@dataclass(frozen=True)
class SampleManifest:
    """What ``build_sample_tree`` made: enough to assert a scan and create legacy rows."""

    root: Path
    outside: Path  # the file the outbound link points at, next to ``root``
    seed: int
    expected: Mapping[str, str]  # scan path -> Kind value, one per entry a scan yields
    reasons: Mapping[str, str]  # scan path -> a fragment of the expected reason
    duplicates: Mapping[str, str]  # path -> the path whose bytes it repeats
    legacy_values: tuple[LegacyValue, ...]
    notes: tuple[str, ...] = field(default=())  # what could not be made here (no symlinks)

    @property
    def counts(self) -> dict[str, int]:
        """Entries per kind, plus duplicates, unique images and legacy value outcomes."""
        counts = Counter(self.expected.values())
        out = {str(kind): counts.get(str(kind), 0) for kind in Kind}
        out["duplicates"] = len(self.duplicates)
        out["unique_images"] = out[Kind.IMAGE] - len(self.duplicates)
        out["legacy_values"] = len(self.legacy_values)
        out["dangling_values"] = sum(1 for v in self.legacy_values if v.path is None)
        return out

    @property
    def image_paths(self) -> list[str]:
        return sorted(p for p, k in self.expected.items() if k == Kind.IMAGE)


class _Builder:
    """Writes files under ``root`` and records what a scan must say about each."""

    def __init__(self, root: Path, photos_dir: Path | None, seed: int, max_length: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.max_length = max_length
        self.photos: list[Path] = []
        if photos_dir is not None:
            self.photos = sorted(
                p for p in photos_dir.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES
            )
            if not self.photos:
                raise FileNotFoundError(f"no photos in {photos_dir}")
        self._bases: dict[int, Image.Image] = {}
        self._smalls: dict[int, Image.Image] = {}
        self.expected: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self.duplicates: dict[str, str] = {}
        self.values: list[LegacyValue] = []
        self.notes: list[str] = []
        self.digests: set[bytes] = set()
        self.folded: set[str] = set()

    # -- files -------------------------------------------------------------------------

    def write(self, rel: str, data: bytes, kind: str, reason: str | None = None) -> str:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.expected[rel] = kind
        if reason:
            self.reasons[rel] = reason
        if kind == Kind.IMAGE:
            self.folded.add(lookup_key(rel))
        return rel

    def image(self, rel: str, data: bytes) -> str:
        return self.write(rel, data, Kind.IMAGE)

    def copy(self, rel: str, original: str) -> str:
        """An identical copy of an image already written (a duplicate to fold)."""
        self.duplicates[rel] = original
        return self.image(rel, (self.root / original).read_bytes())

    def junk(self, rel: str, data: bytes, reason: str) -> None:
        self.write(rel, data, Kind.JUNK, reason)

    def link(self, rel: str, target: str, kind: str, reason: str | None = None) -> bool:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(target, path)
        except OSError as e:  # e.g. Windows without the privilege
            self.notes.append(f"no symlink {rel}: {e}")
            return False
        self.expected[rel] = kind
        if reason:
            self.reasons[rel] = reason
        return True

    def value(self, value: str, style: str, path: str | None) -> None:
        """Record what an old row held. The old column held at most ``max_length``
        characters: a longer spelling is recorded as the plain path, or not at all."""
        if len(value) > self.max_length and path is not None:
            value, style = path, "relative"
        if len(value) > self.max_length:
            return
        kind = self.expected.get(path) if path else None
        self.values.append(LegacyValue(value, style, path, kind))

    def free_name(self, rel: str) -> str:
        """``rel``, or ``rel`` with ``-2``, ``-3``... so no two images fold to one key."""
        stem, dot, ext = rel.rpartition(".")
        candidate, n = rel, 1
        while lookup_key(candidate) in self.folded:
            n += 1
            candidate = f"{stem}-{n}{dot}{ext}"
        return candidate

    # -- pixels ------------------------------------------------------------------------

    def photo(self, i: int) -> Path | None:
        """The file of photo ``i`` (mod the photos), or None when pictures are drawn."""
        return self.photos[i % len(self.photos)] if self.photos else None

    def base(self, i: int) -> Image.Image:
        """Photo ``i`` (mod the photos) decoded at its own size, upright, RGB; cached."""
        if not self.photos:
            i %= DRAWN
            if i not in self._bases:
                self._bases[i] = _drawn(i)
            return self._bases[i]
        i %= len(self.photos)
        if i not in self._bases:
            with _open_photo(self.photos[i]) as im:
                self._bases[i] = ImageOps.exif_transpose(im).convert("RGB")
        return self._bases[i]

    def small(self, i: int) -> Image.Image:
        """Photo ``i`` decoded small (``BASE_SIZE``), upright, RGB; cached (bulk images)."""
        if not self.photos:
            return self.base(i)
        i %= len(self.photos)
        if i not in self._smalls:
            with _open_photo(self.photos[i]) as im:
                im.draft("RGB", (BASE_SIZE, BASE_SIZE))  # JPEG shrink-on-load: fast
                im.thumbnail((BASE_SIZE, BASE_SIZE))
                self._smalls[i] = ImageOps.exif_transpose(im).convert("RGB")
        return self._smalls[i]

    def pixels(self, i: int, size: int | None = None) -> Image.Image:
        """Photo ``i`` cropped a little (seeded), at its own size or shrunk to ``size`` on
        its long side. At its own size the crop is lighter (at most a tenth in all)."""
        img = self.base(i) if size is None or size > BASE_SIZE else self.small(i)
        w, h = img.size
        part = 10 if size is not None else 20
        dx, dy = self.rng.randint(0, w // part), self.rng.randint(0, h // part)
        img = img.crop((dx, dy, w - self.rng.randint(0, w // part), h - dy))
        if size is not None:
            img.thumbnail((size, size), Image.Resampling.BILINEAR)
        return img

    def encode(self, img: Image.Image, fmt: str, *, quality: int = 82, **params: object) -> bytes:
        """Encoded bytes, guaranteed distinct from every image made before."""
        while True:
            buf = io.BytesIO()
            if fmt in ("JPEG", "WEBP"):
                img.save(buf, fmt, quality=quality, **params)
            else:
                img.save(buf, fmt, **params)
            data = buf.getvalue()
            if self.remember(data):
                return data
            # An accidental twin of an earlier image (same photo, crop and size): nudge it.
            quality -= 1
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

    def remember(self, data: bytes) -> bool:
        """Record ``data`` as made; False if identical bytes were made before."""
        digest = hashlib.sha256(data).digest()
        if digest in self.digests:
            return False
        self.digests.add(digest)
        return True

    def jpeg(
        self, i: int, size: int | None = None, *, quality: int = 82, **params: object
    ) -> bytes:
        """Photo ``i`` re-encoded, at its own size unless ``size`` is given."""
        return self.encode(self.pixels(i, size), "JPEG", quality=quality, **params)

    def camera(self, i: int) -> bytes:
        """Photo ``i``'s own file, untouched (a camera JPEG keeps its EXIF and ICC profile);
        a re-encoding when it is not a JPEG or was written before."""
        path = self.photo(i)
        if path is not None and path.suffix.lower() in JPEG_SUFFIXES:
            data = path.read_bytes()
            if self.remember(data):
                return data
        return self.jpeg(i)

    def sideways(self, i: int) -> bytes:
        """A shot taken with the camera turned: pixels stored rotated, EXIF orientation 6 to
        show them upright. Photo ``i``'s own file when it is one already."""
        path = self.photo(i)
        if path is not None and path.suffix.lower() in JPEG_SUFFIXES:
            with _open_photo(path) as im:
                orientation = im.getexif().get(0x0112)
            if orientation == 6 and self.remember(data := path.read_bytes()):
                return data
        stored = self.pixels(i).transpose(Image.Transpose.ROTATE_90)  # 6 turns it back
        return self.encode(stored, "JPEG", exif=_orientation_exif(6))

    def big_icc(self) -> bytes | None:
        """The largest ICC profile among the photos (a header past the first 64 KiB)."""
        best: bytes | None = None
        for p in self.photos:
            with _open_photo(p) as im:
                icc = im.info.get("icc_profile")
            if icc and (best is None or len(icc) > len(best)):
                best = icc
        return best


def build_sample_tree(
    dest: Path,
    photos_dir: Path | None = None,
    *,
    n: int | None = None,
    seed: int = 0,
    max_length: int = MAX_LENGTH,
) -> SampleManifest:
    """Write a messy legacy media tree into ``dest`` (which must be absent or empty).

    Without ``n``: the fixed tree of every case (about 25 images and all the litter).
    With ``n``: the fixed tree plus generated images up to about ``n`` in all, with
    realistic camera and CMS names, ~8% byte-identical copies, and legacy values for
    three quarters of them (the rest are orphans) plus ~2% dangling values.
    Legacy values are at most ``max_length`` characters (the old rows' column could hold
    no more): a longer spelling is replaced by the plain relative path, or left out.
    A file named ``<dest.name>-outside.jpg`` is written next to ``dest``: the target of the
    link that leaves the tree (never inside the system, never followed by a scan).
    """
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    b = _Builder(dest, Path(photos_dir) if photos_dir is not None else None, seed, max_length)
    outside = dest.parent / f"{dest.name}-outside.jpg"
    outside.write_bytes(b.jpeg(0, 120))
    _fixed_tree(b, outside)
    if n is not None:
        _bulk(b, max(0, n - sum(1 for k in b.expected.values() if k == Kind.IMAGE)))
    return SampleManifest(
        root=dest,
        outside=outside,
        seed=seed,
        expected=MappingProxyType(dict(sorted(b.expected.items()))),
        reasons=MappingProxyType(b.reasons),
        duplicates=MappingProxyType(b.duplicates),
        legacy_values=tuple(b.values),
        notes=tuple(b.notes),
    )


DRAWN = 24
"""Distinct drawn pictures when no photos are given (crops and sizes vary them further)."""


def _drawn(i: int) -> Image.Image:
    """A deterministic picture: a two-colour gradient, blurred shapes, film grain."""
    rng = random.Random(f"drawn-{i}")
    w, h = BASE_SIZE, rng.choice((360, 427, 480, 640))

    def colour() -> tuple[int, int, int]:
        return (rng.randrange(256), rng.randrange(256), rng.randrange(256))

    top, bottom = colour(), colour()
    img = Image.composite(
        Image.new("RGB", (w, h), top),
        Image.new("RGB", (w, h), bottom),
        Image.linear_gradient("L").resize((w, h)),
    )
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(12, 30)):
        x, y = rng.randrange(-w // 4, w), rng.randrange(-h // 4, h)
        dx, dy = rng.randrange(20, w // 2), rng.randrange(20, h // 2)
        shape = draw.ellipse if rng.random() < 0.6 else draw.rectangle
        shape((x, y, x + dx, y + dy), fill=colour())
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 6)))
    grain = Image.effect_noise((w, h), rng.uniform(8, 24)).convert("RGB")
    return Image.blend(img, grain, 0.12)


@contextlib.contextmanager
def _open_photo(path: Path) -> Iterator[Image.Image]:
    """``Image.open`` without the warning some camera JPEGs raise.

    They carry an MPO header Pillow cannot use; it says so and reads the first picture,
    which is all we want.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Image appears to be a malformed MPO")
        with Image.open(path) as im:
            yield im


def _nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _fixed_tree(b: _Builder, outside: Path) -> None:
    """Every case once, under hand-written names (see the module docstring)."""
    summer = "Photos/Summer 2019"
    # Straight from the camera: its own EXIF (orientation, make) and colour profile.
    img1 = b.image(f"{summer}/IMG_0001.JPG", b.camera(0))
    img1_copy = b.copy(f"{summer}/IMG_0001 (1).JPG", img1)
    beach = b.image(f"{summer}/beach.jpeg", b.jpeg(3))
    sunset = b.image(f"{summer}/Sunset.Jpg", b.jpeg(2))
    b.junk(f"{summer}/.DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(2036), "junk: .DS_Store")
    b.junk(f"{summer}/._beach.jpeg", b"\x00\x05\x16\x07" + bytes(60), "junk: AppleDouble")

    # Same slug, different content: "creme-brulee.jpg" is wanted twice (collision).
    cafe = "Photos/Café"  # NFC folder
    brulee = b.image(f"{cafe}/Crème Brûlée.jpg", b.jpeg(4))
    b.image(f"{cafe}/creme brulee.JPG", b.jpeg(5))
    # An NFD file name in an NFC folder (written on a Mac, copied to Linux).
    eclair = b.image(f"{cafe}/" + _nfd("Éclair.jpg"), b.jpeg(8))
    # The same name twice, NFC and NFD, identical bytes: one object, one key.
    resume = b.image("Photos/Résumé.jpg", b.jpeg(6))
    resume_nfd = b.copy(_nfd("Photos/Résumé.jpg"), resume)
    # A whole NFD folder.
    manana = b.image(_nfd("Fotos Ünïcode/Mañana.png"), b.encode(b.pixels(9), "PNG"))

    up = "uploads/2015/03"
    file1 = b.image(f"{up}/file.jpg", b.jpeg(13))
    b.copy(f"{up}/file (1).jpg", file1)
    file2 = b.image(f"{up}/file (2).jpg", b.jpeg(14))
    b.junk(f"{up}/Thumbs.db", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504), "junk: Thumbs.db")
    b.junk("uploads/desktop.ini", b"[.ShellClassInfo]\r\nIconResource=x\r\n", "junk: desktop.ini")
    # A sideways camera shot: the pipeline must apply its EXIF orientation.
    phone = b.image(f"{up}/IMG_2041.JPG", b.sideways(1))

    # A PNG with transparency, a GIF (two frames), a WebP, and odd names.
    shoe = b.image("products/Red Shoe_final.PNG", _transparent_png(b))
    logo = b.image("products/logo.gif", _gif(b))
    hero = b.image("products/hero banner.webp", b.encode(b.pixels(12), "WEBP"))
    b.image("products/★★★.jpg", b.jpeg(15))
    b.image("products/日本語の写真.jpg", b.jpeg(16))
    long_name = "products/" + "Very long product name " * 8 + "FINAL.jpeg"
    b.image(long_name, b.jpeg(17))
    icc = b.big_icc()
    if icc:
        b.image("products/print/poster.jpg", b.jpeg(11, icc_profile=icc))

    b.write("docs/notes.txt", b"Remember to move the photos to S3.\n", Kind.NOT_IMAGE, "text")
    b.write(
        "docs/fake.png",
        b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n",
        Kind.NOT_IMAGE,
        "not an image",
    )
    whole = b.jpeg(10, 480, quality=90)
    b.write("broken/truncated.jpg", whole[: len(whole) * 11 // 20], Kind.REJECTED, "truncated")
    b.write("broken/empty.jpg", b"", Kind.REJECTED, "empty file")

    b.link("links/outside.jpg", f"../../{outside.name}", Kind.REJECTED, "outside the tree")
    b.link("links/loop", "..", Kind.REJECTED, "loop")
    b.link("links/gone.jpg", "../nowhere.jpg", Kind.REJECTED, "broken link")
    if b.link("links/alias.jpg", f"../{beach}", Kind.IMAGE):
        b.duplicates["links/alias.jpg"] = beach

    b.junk("__MACOSX/Photos/._IMG_0001.JPG", bytes(82), "junk: __MACOSX")
    _collapse(b, "__MACOSX", "junk: __MACOSX")
    b.junk(".cache/thumbs/a.jpg", b.jpeg(17, 96), "hidden directory")
    _collapse(b, ".cache", "hidden directory")
    b.junk(".hidden.jpg", b.jpeg(18, 96), "hidden file")

    # What old rows held, in every spelling (point 3 of the issue).
    nfc_manana = _nfc(manana)
    values: list[tuple[str, str, str | None]] = [
        (img1, "relative", img1),
        (img1_copy, "relative", img1_copy),
        (f"{MEDIA_URL}{beach}", "media_url", beach),
        (f"{MEDIA_URL}{quote(sunset)}", "url_encoded", sunset),
        (f"{OLD_SITE}{MEDIA_URL}{quote(file2)}?v=3", "absolute_url", file2),
        (f"//cdn.old.example.com{MEDIA_URL}{quote(hero)}", "absolute_url", hero),
        (file1.replace("/", "\\"), "backslashes", file1),
        (f"/{sunset}", "leading_slash", sunset),
        (f"./products/../{logo}", "dot_segments", logo),
        (shoe.upper(), "case", shoe),
        (nfc_manana.lower(), "unicode_case", manana),  # NFC value, NFD file
        (_nfd(brulee), "unicode", brulee),  # NFD value, NFC file
        (_nfc(eclair).upper(), "unicode_case", eclair),
        (f"{MEDIA_URL}{quote(_nfc(resume).upper())}", "unicode_case", resume),  # 2 files, 1 object
        (f"{MEDIA_URL}{resume_nfd}", "media_url", resume_nfd),
        (f"{OLD_SITE}{MEDIA_URL}{quote(phone)}", "absolute_url", phone),
        ("broken/truncated.jpg", "relative", "broken/truncated.jpg"),
        (f"{summer}/IMG_9999.JPG", "dangling", None),
        (f"{OLD_SITE}{MEDIA_URL}gone/away.png", "dangling", None),
        ("../etc/passwd", "escape", None),
        (f"{MEDIA_URL}../../secret.jpg", "escape", None),
        ("", "empty", None),
    ]
    for value, style, path in values:
        b.value(value, style, path)


def _collapse(b: _Builder, folder: str, reason: str) -> None:
    """A skipped folder is one scan entry: forget what was written inside it."""
    for rel in [r for r in b.expected if r.startswith(folder + "/")]:
        del b.expected[rel]
        b.reasons.pop(rel, None)
    b.expected[folder] = Kind.JUNK
    b.reasons[folder] = reason


def _orientation_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _transparent_png(b: _Builder) -> bytes:
    img = b.pixels(19).convert("RGBA")
    mask = Image.new("L", img.size, 0)
    w, h = img.size
    ImageDraw.Draw(mask).ellipse((w // 8, h // 8, w * 7 // 8, h * 7 // 8), fill=255)
    img.putalpha(mask)
    return b.encode(img, "PNG")


def _gif(b: _Builder) -> bytes:
    first = b.pixels(20, 120)
    frames = [first.quantize(64), first.transpose(Image.Transpose.FLIP_LEFT_RIGHT).quantize(64)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=400, loop=0)
    data = buf.getvalue()
    b.remember(data)
    return data


_FOLDERS = (
    "uploads/{year}/{month:02d}",
    "Products/{Brand}/Images",
    "Shop Images/{Brand} {year}",
    "Événements/{year}/Été {year}",
    "blog/{year}/{month:02d}/{day:02d}",
    "CMS_uploads/Gallery {n}",
)
_NAMES = (
    ("IMG_{i:04d}.JPG", "JPEG"),
    ("DSC{i:05d}.jpg", "JPEG"),
    ("Photo {i}.jpeg", "JPEG"),
    ("scan_{i:04d}.Jpg", "JPEG"),
    ("{Brand} product {i} été.jpg", "JPEG"),
    ("{Brand}_Product_{i}_FINAL.JPEG", "JPEG"),
    ("Screen Shot {year}-{month:02d}-{day:02d} at {i}.png", "PNG"),
    ("banner-{i}.webp", "WEBP"),
    ("image{i}.jpg", "JPEG"),
    ("Copy of IMG_{i:04d}.jpg", "JPEG"),
)
_BRANDS = ("Acme", "Nordic Wear", "Café Noir", "ZOOM", "petit_bateau")
_STYLES = (
    "relative",
    "media_url",
    "url_encoded",
    "absolute_url",
    "backslashes",
    "case",
    "unicode",
    "dot_segments",
)


def _bulk(b: _Builder, count: int) -> None:
    """About ``count`` more images with realistic names, copies, values and orphans."""
    rng = b.rng
    made: list[str] = []
    for i in range(count):
        fields = {
            "year": rng.randint(2009, 2019),
            "month": rng.randint(1, 12),
            "day": rng.randint(1, 28),
            "Brand": rng.choice(_BRANDS),
            "n": rng.randint(1, 9),
            "i": 1000 + i,
        }
        if made and rng.random() < 0.08:
            original = rng.choice(made)
            stem, dot, ext = original.rpartition(".")
            rel = b.copy(b.free_name(f"{stem} (1){dot}{ext}"), original)
        else:
            folder = rng.choice(_FOLDERS).format(**fields)
            template, fmt = rng.choice(_NAMES)
            name = template.format(**fields)
            if rng.random() < 0.3:
                name = _nfd(name)  # uploaded from a Mac
            rel = b.free_name(f"bulk/{folder}/{name}")
            size = rng.choice(SIZES[:5] if fmt == "PNG" else SIZES)
            b.image(rel, b.encode(b.pixels(i, size), fmt))
            made.append(rel)
        if rng.random() < 0.75:
            style = _STYLES[i % len(_STYLES)]
            b.value(_spell(rel, style), style, rel)
        if rng.random() < 0.02:
            b.value(f"{MEDIA_URL}bulk/missing/IMG_{i:05d}.JPG", "dangling", None)


def _spell(path: str, style: str) -> str:
    """``path`` as an old row would have held it in ``style``."""
    if style == "media_url":
        return MEDIA_URL + path
    if style == "url_encoded":
        return MEDIA_URL + quote(path)
    if style == "absolute_url":
        return f"{OLD_SITE}{MEDIA_URL}{quote(path)}"
    if style == "backslashes":
        return path.replace("/", "\\")
    if style == "case" and lookup_key(path.swapcase()) == lookup_key(path):
        return path.swapcase()
    if style == "unicode" and _nfc(path) != _nfd(path):
        return _nfd(path) if path == _nfc(path) else _nfc(path)
    if style == "dot_segments":
        return f"./{path.split('/', 1)[0]}/../{path}"
    return path

"""The imaging contract on everyday sources: graphics, icons, animations, small lossy
photos, HEIC, and files that carry their owner's metadata.

1. Never bigger: a web-format source that needs no resize, rotation or colour change
   gives an optimized original no larger than itself.
2. Privacy: nothing from EXIF/XMP/comments reaches a public output; the ICC profile and
   the upright orientation are kept.
3. Content: graphics never become JPEG; photographs keep a JPEG fallback.
4. Every still image has every format of its profile, at its own width when narrower.
5. Animations stay animated in WebP/AVIF; the fallback is a one-frame poster.
6. HEIC is read and served in browser formats.
7. Quality: SSIM (luma, on white) of the original against its source.

Sources are made in code (``bench/everyday_sources.py``) or cut from ``demo/photos``.
"""

from __future__ import annotations

import io
import random
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageDraw, ImageOps, PngImagePlugin

from bench.everyday_sources import (
    animation_frames,
    chart,
    heic,
    icon,
    logo,
    photo_crops,
    product_shot,
    save,
    screenshot,
)
from pipeline.errors import ProfileError
from pipeline.imaging import Output, Profile, Rendering, profile_from_dict, render
from pipeline.imaging.content import decide, measure
from pipeline.imaging.detect import jpeg_quality
from pipeline.imaging.strip import strip_metadata
from tests.conftest import PHOTOS
from tests.unit.imaging_samples import BLUE, GREEN, RED, YELLOW, decode, oriented_jpeg, quadrants

MIN_SSIM = {"graphic": 0.99, "photo": 0.97}
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
# Private values planted in the sources: none of them may reach a public output.
OWNER, SERIAL, XMP_CREATOR, COMMENT = "Jane Owner", "SN-0042-7731", "Jane XMP", b"Jane comment"
PRIVATE = (OWNER.encode(), SERIAL.encode(), XMP_CREATOR.encode(), COMMENT)
XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>'
    f"{XMP_CREATOR}</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>"
).encode()
GPS_IFD, EXIF_IFD = 0x8825, 0x8769
ARTIST, BODY_SERIAL, ORIENTATION = 0x013B, 0xA431, 0x0112
# Header entries that carry metadata, as Pillow names them per format.
METADATA_INFO_KEYS = ("exif", "xmp", "XML:com.adobe.xmp", "comment")


# --- helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """An upright 600x800 crop of the repository's first photo (an iPhone JPEG)."""
    crops = dict(photo_crops(PHOTOS, count=1))
    return next(iter(crops.values()))


def private_exif() -> Image.Exif:
    """EXIF as a phone writes it: owner, body serial number and a GPS position."""
    exif = Image.Exif()
    exif[ARTIST] = OWNER
    exif.get_ifd(EXIF_IFD)[BODY_SERIAL] = SERIAL
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)})
    return exif


def frames_of(data: bytes) -> list[tuple[Image.Image, int | None]]:
    """Every frame of ``data`` (RGBA) with its duration (read after decoding the frame)."""
    frames = []
    with Image.open(io.BytesIO(data)) as im:
        for index in range(getattr(im, "n_frames", 1)):
            im.seek(index)
            im.load()
            duration = im.info.get("duration")
            frames.append((im.convert("RGBA"), None if duration is None else round(duration)))
    return frames


def formats(rendering: Rendering) -> set[str]:
    return {o.format for o in rendering.outputs}


def assert_no_private_metadata(output: Output) -> None:
    where = f"{output.name}.{output.format}"
    for value in PRIVATE:
        assert value not in output.data, f"{value!r} found in {where}"
    with Image.open(io.BytesIO(output.data)) as im:
        exif = im.getexif()
        assert not exif.get_ifd(GPS_IFD), f"GPS in {where}"
        assert BODY_SERIAL not in exif.get_ifd(EXIF_IFD), f"serial number in {where}"
        assert ARTIST not in exif, f"artist in {where}"
        present = [k for k in METADATA_INFO_KEYS if im.info.get(k)]
        assert not present, f"{present} in {where}"


def assert_quadrants(output: Output) -> None:
    """``output`` shows ``quadrants()`` upright: red, green / blue, yellow."""
    where = f"{output.name}.{output.format}"
    im = decode(output.data)
    assert im.getexif().get(ORIENTATION, 1) == 1, f"{where} still asks to be rotated"
    im = im.convert("RGB")
    w, h = im.size
    assert w > h, f"{where} is {w}x{h}: not upright"
    for (fx, fy), colour in (
        ((0.25, 0.25), RED),
        ((0.75, 0.25), GREEN),
        ((0.25, 0.75), BLUE),
        ((0.75, 0.75), YELLOW),
    ):
        got = im.getpixel((int(fx * w), int(fy * h)))
        assert all(abs(g - c) <= 40 for g, c in zip(got, colour, strict=True)), (
            f"{where}: {got} at {fx, fy}, expected {colour}"
        )


def on_white(data: bytes) -> Image.Image:
    """The first frame upright, in sRGB, composited on white (what a page shows), as luma."""
    with Image.open(io.BytesIO(data)) as opened:
        im = ImageOps.exif_transpose(opened)
        icc = opened.info.get("icc_profile")
        rgba = im.convert("RGBA")
    if icc and icc != SRGB_ICC:
        rgba = ImageCms.profileToProfile(
            rgba, io.BytesIO(icc), ImageCms.createProfile("sRGB"), outputMode="RGBA"
        )
    white = Image.new("RGBA", rgba.size, "white")
    return Image.alpha_composite(white, rgba).convert("L")


def ssim(source: bytes, output: bytes) -> float:
    """Mean SSIM of the luma of ``output`` against ``source`` (both on white), computed as
    scikit-image's default does: 7x7 uniform windows, sample variances, K1=0.01, K2=0.03."""
    np = pytest.importorskip("numpy", reason="SSIM needs numpy (requirements-dev.txt)")
    a, b = on_white(source), on_white(output)
    assert a.size == b.size, "the original must keep the source's size here"
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    win = 7
    if min(x.shape) < win:
        return 1.0 if np.array_equal(x, y) else 0.0

    def mean(z):  # the mean of every full 7x7 window (integral image)
        c = np.pad(np.cumsum(np.cumsum(z, 0), 1), ((1, 0), (1, 0)))
        return (c[win:, win:] - c[:-win, win:] - c[win:, :-win] + c[:-win, :-win]) / win**2

    n = win * win
    ux, uy = mean(x), mean(y)
    vx = (mean(x * x) - ux * ux) * n / (n - 1)
    vy = (mean(y * y) - uy * uy) * n / (n - 1)
    vxy = (mean(x * y) - ux * uy) * n / (n - 1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s.mean())


def test_ssim_helper_tells_identical_from_degraded(photo):
    data = save(photo, "PNG")
    assert ssim(data, data) == pytest.approx(1.0)
    assert ssim(data, save(photo, "JPEG", quality=5)) < 0.9


# --- 3. graphics stay graphics ------------------------------------------------------


def test_product_shot_on_white_is_a_graphic_never_jpeg_never_bigger():
    data = save(product_shot(), "PNG", optimize=True)
    rendering = render(data, Profile())

    assert rendering.content == "graphic"
    assert "jpeg" not in formats(rendering)
    assert {"avif", "webp", "png"} <= formats(rendering)
    assert rendering.original.size <= len(data)
    assert ssim(data, rendering.original.data) >= MIN_SSIM["graphic"]


def test_a_profile_that_lists_jpeg_gives_a_graphic_png_instead():
    data = save(product_shot(), "PNG", optimize=True)
    rendering = render(data, Profile(formats=("avif", "webp", "jpeg")))

    assert rendering.content == "graphic"
    assert "jpeg" not in formats(rendering)
    assert rendering.variants("png"), "JPEG is replaced by PNG for a graphic"


def test_palette_logo_with_transparency_keeps_its_alpha_everywhere():
    source = logo(transparent=True)
    data = save(source, "PNG", optimize=True)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "P" and "transparency" in im.info  # what the test is about
    rendering = render(data, Profile())

    assert rendering.content == "graphic"
    assert rendering.original.size <= len(data)
    assert "jpeg" not in formats(rendering)
    assert {"png", "webp", "avif"} <= formats(rendering)
    for output in rendering.outputs:
        im = decode(output.data).convert("RGBA")
        w, h = im.size
        where = f"{output.name}.{output.format}"
        for corner in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)):
            assert im.getpixel(corner)[3] <= 8, f"{where}: corner {corner} is not transparent"
        # The middle of the orange disc (x 16-128 of 400, y 24-136 of 160) stays opaque.
        assert im.getpixel((round(w * 72 / 400), round(h * 90 / 160)))[3] >= 247, where


# --- 4. every format, at the image's own width ---------------------------------------


def test_an_icon_gets_webp_and_avif_at_its_own_width():
    data = save(icon(64), "PNG", optimize=True)
    rendering = render(data, Profile())

    assert {"webp", "avif"} <= formats(rendering)
    names = {o.name for o in rendering.outputs}
    assert "w64" in names
    assert [s.name for s in rendering.skipped] == ["w320", "w640", "w1024", "w1600"]
    assert [o.width for o in rendering.variants("webp")] == [64]
    assert [o.width for o in rendering.variants("avif")] == [64]
    assert rendering.original.size <= len(data)


# --- 1. never bigger, on a lossy photo ------------------------------------------------


def test_lossy_webp_photo_stays_a_photo_and_is_never_bigger(photo):
    data = save(photo, "WEBP", quality=75, method=4)
    rendering = render(data, Profile())

    assert rendering.content == "photo"
    assert rendering.original.size <= len(data)
    assert rendering.original.format == "webp"
    assert rendering.variants("jpeg"), "a photograph keeps a JPEG fallback"
    assert not rendering.variants("png")
    assert ssim(data, rendering.original.data) >= MIN_SSIM["photo"]


# --- 5. animation -------------------------------------------------------------------

DURATIONS = [60 + 10 * i for i in range(12)]  # GIF keeps 10 ms steps


def animated(fmt: str, **options: object) -> bytes:
    frames = animation_frames()
    return save(
        frames[0],
        fmt,
        save_all=True,
        append_images=frames[1:],
        duration=DURATIONS,
        loop=0,
        **options,
    )


def test_animated_gif_stays_animated_in_webp_and_avif_with_its_timing():
    data = animated("GIF")
    source = frames_of(data)
    assert len(source) == len(DURATIONS)
    rendering = render(data, Profile())

    for output in rendering.outputs:
        frames = frames_of(output.data)
        where = f"{output.name}.{output.format}"
        if output.format in ("webp", "avif"):
            assert len(frames) == len(source), where
            assert output.frames == len(source), where
            assert [d for _f, d in frames] == DURATIONS, where
        else:
            assert output.format in ("png", "jpeg"), where
            assert len(frames) == 1 and output.frames == 1, f"{where} is not a still poster"
    assert {"webp", "avif"} <= formats(rendering)
    assert rendering.original.frames == len(source), "the original keeps the animation"
    assert rendering.original.size <= len(data)


def test_animation_frames_are_the_source_frames():
    data = animated("GIF")
    rendering = render(data, Profile())
    webp = rendering.variants("webp")[-1]
    # The ball moves: frame 0 and frame 6 differ, and each matches its source frame.
    got = [f for f, _d in frames_of(webp.data)]
    want = [f for f, _d in frames_of(data)]
    for index in (0, 6, 11):
        pairs = zip(got[index].tobytes(), want[index].tobytes(), strict=True)
        diff = max(abs(a - b) for a, b in pairs)
        assert diff <= 40, f"frame {index} differs by {diff}"
    assert got[0].tobytes() != got[6].tobytes()


def test_keep_animation_off_renders_every_output_from_one_frame():
    data = animated("GIF")
    rendering = render(data, Profile(keep_animation=False))

    for output in rendering.outputs:
        assert output.frames == 1 and len(frames_of(output.data)) == 1, output.name
    assert any("keep_animation" in n for n in rendering.notes)


@pytest.mark.parametrize(
    "budget", [{"max_frames": 5}, {"max_pixels": 160 * 160 * 5}], ids=["frames", "pixels"]
)
def test_an_animation_past_the_budget_is_rendered_from_its_first_frame(budget):
    rendering = render(animated("GIF"), Profile(**budget))

    for output in rendering.outputs:
        assert output.frames == 1 and len(frames_of(output.data)) == 1, output.name
    assert any("animation dropped" in n for n in rendering.notes)


def test_apng_becomes_animated_webp():
    data = animated("PNG")
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.n_frames == len(DURATIONS)
    rendering = render(data, Profile())

    for output in rendering.variants("webp"):
        frames = frames_of(output.data)
        assert len(frames) == len(DURATIONS)
        assert [d for _f, d in frames] == DURATIONS
    assert rendering.variants("webp")
    for output in rendering.variants("png"):
        assert len(frames_of(output.data)) == 1
    assert len(frames_of(rendering.original.data)) == len(DURATIONS)
    assert rendering.original.size <= len(data)


# --- 6. HEIC ------------------------------------------------------------------------


def test_heic_is_served_in_browser_formats_without_its_exif(photo):
    pytest.importorskip(
        "pillow_heif", reason="pillow-heif is not installed: HEIC input cannot be tested"
    )
    tagged = photo.copy()
    tagged.info["exif"] = private_exif().tobytes()
    data = heic(tagged)
    with Image.open(io.BytesIO(data)) as im:
        assert im.getexif().get_ifd(GPS_IFD), "the HEIC under test carries GPS"
    rendering = render(data, Profile())

    assert rendering.source.format == "heic"
    assert rendering.content == "photo"
    assert formats(rendering) == {"jpeg", "webp", "avif"}
    assert rendering.original.format == "jpeg"
    with Image.open(io.BytesIO(rendering.original.data)) as im:
        assert jpeg_quality(im) >= 86, "a full-size transcode is kept at quality 86 or more"
    for output in rendering.outputs:
        assert_no_private_metadata(output)
    assert ssim(data, rendering.original.data) >= MIN_SSIM["photo"]


def test_a_rotated_heic_comes_out_upright_once():
    pytest.importorskip(
        "pillow_heif", reason="pillow-heif is not installed: HEIC input cannot be tested"
    )
    upright = quadrants((64, 48))
    with Image.open(io.BytesIO(oriented_jpeg(6, upright))) as stored:
        stored.load()
        data = save(stored, "HEIF", quality=90, exif=stored.getexif().tobytes())
    rendering = render(data, Profile())

    assert (rendering.source.width, rendering.source.height) == (64, 48)
    for output in rendering.outputs:
        assert_quadrants(output)


# --- 2. privacy ---------------------------------------------------------------------


def _private_source(fmt: str, photo: Image.Image) -> bytes:
    """A 600x400 web image (no resize needed) carrying EXIF (GPS, serial, artist), XMP or
    text, a comment where the format has one, and an sRGB ICC profile (no colour change)."""
    picture = photo.crop((0, 200, 600, 600))
    tagged = {"exif": private_exif(), "icc_profile": SRGB_ICC}
    if fmt == "jpeg":
        return save(picture, "JPEG", quality=80, comment=COMMENT, **tagged)
    if fmt == "webp":
        return save(picture, "WEBP", quality=75, method=4, xmp=XMP, **tagged)
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", OWNER)
    text.add_itxt("XML:com.adobe.xmp", XMP.decode(), lang="", tkey="")
    shot = product_shot(transparent=True).crop((0, 100, 600, 500))
    return save(shot, "PNG", optimize=True, pnginfo=text, **tagged)


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png"])
def test_gps_serial_and_owner_reach_no_output_and_a_passthrough_keeps_its_icc(photo, fmt):
    data = _private_source(fmt, photo)
    with Image.open(io.BytesIO(data)) as im:
        assert im.getexif().get_ifd(GPS_IFD) and im.info.get("icc_profile") == SRGB_ICC
        assert im.size == (600, 400)
    rendering = render(data, Profile())

    for output in rendering.outputs:
        assert_no_private_metadata(output)
        with Image.open(io.BytesIO(output.data)) as im:
            assert im.getexif().get(ORIENTATION, 1) == 1
            assert im.width * 400 == pytest.approx(im.height * 600, rel=0.01), "not upright"
    original = rendering.original
    assert original.size <= len(data)
    passthrough = any("original published in its own" in n for n in rendering.notes)
    if fmt != "jpeg":
        # Re-encoding a q75 WebP photo or this product PNG comes out larger (the tests
        # above): the original is the source's own encoding, stripped.
        assert passthrough and original.format == fmt
    if passthrough:
        with Image.open(io.BytesIO(original.data)) as im:
            assert im.info.get("icc_profile") == SRGB_ICC, "the passthrough lost its ICC"
            assert im.tobytes() == decode(data).tobytes(), "the passthrough changed pixels"


def test_rotated_jpeg_with_gps_comes_out_upright_without_gps():
    upright = quadrants((64, 48))
    with Image.open(io.BytesIO(oriented_jpeg(6, upright))) as stored:
        exif = stored.getexif()
        assert exif[ORIENTATION] == 6
        exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 24.0)})
        exif[ARTIST] = OWNER
        data = save(stored, "JPEG", quality=95, exif=exif)
    rendering = render(data, Profile())

    assert (rendering.source.width, rendering.source.height) == (64, 48)
    for output in rendering.outputs:
        assert_no_private_metadata(output)
        assert_quadrants(output)


# --- strip.py: metadata out, pixels and ICC kept -------------------------------------


def _jpeg_source() -> bytes:
    return save(
        product_shot(200),
        "JPEG",
        quality=85,
        exif=private_exif(),
        xmp=XMP,
        comment=COMMENT,
        icc_profile=SRGB_ICC,
    )


def _png_source() -> bytes:
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", OWNER)  # tEXt
    text.add_text("Comment", COMMENT.decode(), zip=True)  # zTXt
    text.add_itxt("XML:com.adobe.xmp", XMP.decode(), lang="", tkey="")  # iTXt
    text.add_itxt("Description", SERIAL, lang="en", tkey="Description")
    return save(
        product_shot(200, transparent=True),
        "PNG",
        pnginfo=text,
        exif=private_exif(),  # eXIf
        icc_profile=SRGB_ICC,  # iCCP
    )


def _gif_source() -> bytes:
    return save(logo(), "GIF", comment=COMMENT)


def _webp_source() -> bytes:
    return save(
        product_shot(200), "WEBP", quality=80, exif=private_exif(), xmp=XMP, icc_profile=SRGB_ICC
    )


STRIP_SOURCES = {
    "jpeg": _jpeg_source,
    "png": _png_source,
    "gif": _gif_source,
    "webp": _webp_source,
}


@pytest.mark.parametrize("fmt", STRIP_SOURCES)
def test_strip_removes_metadata_and_keeps_pixels_and_icc(fmt):
    data = STRIP_SOURCES[fmt]()
    before = decode(data)
    planted = [v for v in PRIVATE if v in data]
    assert planted, "the source under test carries private metadata"

    stripped = strip_metadata(data, fmt)

    assert stripped is not None
    assert len(stripped) < len(data)
    for value in planted:
        assert value not in stripped, f"{value!r} left in the stripped {fmt}"
    after = decode(stripped)
    assert (after.format, after.mode, after.size) == (before.format, before.mode, before.size)
    assert after.tobytes() == before.tobytes(), "stripping changed the pixels"
    if fmt in ("gif", "png") and before.mode == "P":
        assert after.getpalette() == before.getpalette()
    assert not after.getexif(), f"EXIF left in the stripped {fmt}"
    left = [k for k in (*METADATA_INFO_KEYS, "Author", "Comment", "Description") if k in after.info]
    assert not left, f"{left} left in the stripped {fmt}"
    if fmt == "png":
        assert not after.text
    if fmt != "gif":
        assert after.info.get("icc_profile") == SRGB_ICC, "the ICC profile was not kept"


def test_strip_keeps_a_gif_animation_and_its_timing():
    data = animated("GIF", comment=COMMENT)
    assert COMMENT in data
    stripped = strip_metadata(data, "gif")

    assert stripped is not None and COMMENT not in stripped
    got, want = frames_of(stripped), frames_of(data)
    assert [d for _f, d in got] == [d for _f, d in want] == DURATIONS
    assert [f.tobytes() for f, _d in got] == [f.tobytes() for f, _d in want]
    with Image.open(io.BytesIO(stripped)) as im:
        assert im.info.get("loop") == 0


TRUNCATIONS = [
    *((fmt, "half") for fmt in STRIP_SOURCES),
    # Without its last byte: a JPEG lacks its end marker, a PNG its IEND CRC, a GIF its
    # trailer. (A WebP's last byte may be padding after a dropped chunk: nothing lost.)
    *((fmt, "last-byte") for fmt in ("jpeg", "png", "gif")),
]


@pytest.mark.parametrize(("fmt", "cut"), TRUNCATIONS)
def test_strip_refuses_a_truncated_file(fmt, cut):
    data = STRIP_SOURCES[fmt]()
    truncated = data[:-1] if cut == "last-byte" else data[: len(data) // 2]
    assert strip_metadata(truncated, fmt) is None


# --- content: photo or graphic ------------------------------------------------------


def test_a_png_photograph_is_a_photo_with_a_jpeg_fallback(photo):
    data = save(photo, "PNG")
    assert decide("auto", lossless=True, has_alpha=False, traits=measure(photo)) == "photo"
    rendering = render(data, Profile())

    assert rendering.content == "photo"
    assert rendering.original.format == "jpeg"
    assert rendering.variants("jpeg") and not rendering.variants("png")
    assert ssim(data, rendering.original.data) >= MIN_SSIM["photo"]


def test_the_shipped_png_photograph_is_a_photo():
    data = (PHOTOS / "25_farmer_290.png").read_bytes()
    assert render(data, Profile()).content == "photo"


@pytest.mark.parametrize("maker", [screenshot, chart], ids=["screenshot", "chart"])
@pytest.mark.parametrize("fmt", ["PNG", "WEBP-lossless"])
def test_screenshots_and_charts_are_graphics(maker, fmt):
    im = maker()
    assert decide("auto", lossless=True, has_alpha=False, traits=measure(im)) == "graphic"
    data = save(im, "PNG") if fmt == "PNG" else save(im, "WEBP", lossless=True)
    rendering = render(data, Profile())

    assert rendering.content == "graphic"
    assert "jpeg" not in formats(rendering)
    assert rendering.original.size <= len(data)
    assert ssim(data, rendering.original.data) >= MIN_SSIM["graphic"]


def test_flat_screenshot_like_pixels_are_graphic_and_noise_is_photo():
    flat = Image.new("RGB", (300, 200), (246, 247, 249))
    draw = ImageDraw.Draw(flat)
    for i in range(8):
        draw.rectangle((10, 10 + 22 * i, 290, 26 + 22 * i), fill=(30 + 25 * i, 90, 200 - 20 * i))
    noise = Image.frombytes("RGB", (300, 200), random.Random(1).randbytes(300 * 200 * 3))

    assert measure(flat).colours is not None and measure(flat).flat > 0.9
    assert decide("auto", lossless=True, has_alpha=False, traits=measure(flat)) == "graphic"
    assert decide("auto", lossless=True, has_alpha=False, traits=measure(noise)) == "photo"
    # Lossy sources are photographs whatever their pixels; transparency makes a graphic.
    assert decide("auto", lossless=False, has_alpha=False, traits=measure(flat)) == "photo"
    assert decide("auto", lossless=True, has_alpha=True, traits=measure(noise)) == "graphic"


def test_profile_content_photo_forces_a_jpeg_fallback_for_a_graphic():
    data = save(product_shot(), "PNG", optimize=True)
    rendering = render(data, Profile(content="photo"))

    assert rendering.content == "photo"
    assert rendering.variants("jpeg")
    assert not rendering.variants("png")
    assert rendering.original.size <= len(data)


def test_profile_content_graphic_keeps_a_photo_out_of_jpeg(photo):
    data = save(photo, "JPEG", quality=80)
    rendering = render(data, Profile(content="graphic"))

    assert rendering.content == "graphic"
    assert not rendering.variants("jpeg")
    assert rendering.variants("png")
    # The original may only be JPEG as the source's own file (never bigger, rule 1).
    if rendering.original.format == "jpeg":
        assert rendering.original.size <= len(data)
        assert decode(rendering.original.data).tobytes() == decode(data).tobytes()


@pytest.mark.parametrize("value", ["vector", "Photo", "", None, 1])
def test_an_invalid_content_value_is_a_profile_error(value):
    with pytest.raises(ProfileError, match="content"):
        Profile(content=value)
    with pytest.raises(ProfileError, match="content"):
        profile_from_dict("x", {"content": value})


# --- 7. quality ---------------------------------------------------------------------


EVERYDAY = {  # name -> (maker of the source bytes from the photo crop, content class)
    "product_alpha.png": (
        lambda _p: save(product_shot(transparent=True), "PNG", optimize=True),
        "graphic",
    ),
    "logo.png": (lambda _p: save(logo(), "PNG", optimize=True), "graphic"),
    "logo_alpha.png": (lambda _p: save(logo(transparent=True), "PNG", optimize=True), "graphic"),
    "icon_32.png": (lambda _p: save(icon(32), "PNG", optimize=True), "graphic"),
    "bounce.gif": (lambda _p: animated("GIF"), "graphic"),
    "photo_q70.jpg": (lambda p: save(p, "JPEG", quality=70), "photo"),
    "photo_q90.jpg": (lambda p: save(p, "JPEG", quality=90), "photo"),
}


@pytest.mark.parametrize("name", EVERYDAY)
def test_original_keeps_the_source_visually(photo, name):
    maker, content = EVERYDAY[name]
    data = maker(photo)
    rendering = render(data, Profile())

    assert rendering.content == content
    assert rendering.original.size <= len(data)
    score = ssim(data, rendering.original.data)
    assert score >= MIN_SSIM[content], f"{name}: SSIM {score:.4f}"


# --- 1. never bigger, as a property ---------------------------------------------------

SMALLEST_WIDTH = min(Profile().widths)


@st.composite
def web_sources(draw: st.DrawFn) -> bytes:
    """A small web-format file (narrower than every profile width: nothing is resized)."""
    width = draw(st.integers(1, SMALLEST_WIDTH - 1))
    height = draw(st.integers(1, 200))
    kind = draw(st.sampled_from(["flat", "noisy", "gradient"]))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    if kind == "noisy":
        im = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    elif kind == "gradient":
        im = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    else:
        im = Image.new("RGB", (width, height), tuple(rng.randbytes(3)))
        shapes = ImageDraw.Draw(im)
        for _ in range(rng.randint(0, 6)):
            x0, y0 = rng.randrange(width), rng.randrange(height)
            box = (x0, y0, rng.randint(x0, width), rng.randint(y0, height))
            shapes.rectangle(box, fill=tuple(rng.randbytes(3)))
    fmt = draw(st.sampled_from(["PNG", "PNG-P", "PNG-RGBA", "GIF", "WEBP-lossless", "WEBP",
                                "JPEG", "JPEG-L"]))  # fmt: skip
    match fmt:
        case "PNG":
            return save(im, "PNG", optimize=draw(st.booleans()))
        case "PNG-P":
            return save(im.quantize(draw(st.integers(2, 256))), "PNG", optimize=True)
        case "PNG-RGBA":
            alpha = Image.linear_gradient("L").resize((width, height))
            return save(Image.merge("RGBA", [*im.split(), alpha]), "PNG")
        case "GIF":
            return save(im.quantize(draw(st.integers(2, 256))), "GIF", optimize=True)
        case "WEBP-lossless":
            return save(im, "WEBP", lossless=True, quality=draw(st.integers(0, 100)))
        case "WEBP":
            return save(im, "WEBP", quality=draw(st.integers(1, 100)))
        case "JPEG":
            return save(im, "JPEG", quality=draw(st.integers(1, 95)), optimize=draw(st.booleans()))
        case _:
            return save(im.convert("L"), "JPEG", quality=draw(st.integers(1, 95)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=web_sources())
def test_the_original_of_a_web_image_is_never_bigger_than_its_source(data):
    rendering = render(data, Profile())

    assert (rendering.original.width, rendering.original.height) == (
        rendering.source.width,
        rendering.source.height,
    )
    assert rendering.original.size <= len(data), (
        f"{rendering.source.format} {rendering.source.width}x{rendering.source.height}: "
        f"original {rendering.original.format} {rendering.original.size} > {len(data)} bytes"
    )
    assert "jpeg" not in formats(rendering) or rendering.content == "photo"


# -- What the source's own file must not carry when it is published as the original ------


def _flat_rgb(size: tuple[int, int] = (120, 80)) -> Image.Image:
    im = Image.new("RGB", size, (255, 255, 255))
    ImageDraw.Draw(im).rectangle((30, 20, 90, 60), fill=(200, 30, 30))
    return im


def test_a_colour_key_png_is_transparent_in_every_output():
    data = save(_flat_rgb(), "PNG", transparency=(255, 255, 255))
    rendering = render(data, Profile(widths=[60]))
    for output in rendering.outputs:
        im = Image.open(io.BytesIO(output.data)).convert("RGBA")
        assert im.getpixel((0, 0))[3] == 0, (output.name, output.format)  # the key colour
        assert im.getpixel((im.width // 2, im.height // 2))[3] == 255, output.name


def test_a_jfif_thumbnail_is_removed_from_a_published_jpeg():
    jpeg = save(_flat_rgb(), "JPEG", quality=90)
    assert jpeg[2:4] == b"\xff\xe0"
    thumbnail = bytes(range(256)) * 3  # 16x16 RGB
    app0 = (
        b"\xff\xe0"
        + (16 + len(thumbnail)).to_bytes(2, "big")
        + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x10\x10"
        + thumbnail
    )
    length = int.from_bytes(jpeg[4:6], "big")
    with_thumbnail = jpeg[:2] + app0 + jpeg[4 + length :]
    stripped = strip_metadata(with_thumbnail, "jpeg")
    assert stripped is not None and thumbnail not in stripped
    assert stripped[2:20] == b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    assert decode(stripped).tobytes() == decode(with_thumbnail).tobytes()


def test_a_png_tagged_with_other_colours_than_srgb_is_not_published_as_it_is():
    plain = save(_flat_rgb(), "PNG")
    gamma = plain[:33] + _png_chunk(b"gAMA", (100000).to_bytes(4, "big")) + plain[33:]
    srgb_gamma = plain[:33] + _png_chunk(b"gAMA", (45455).to_bytes(4, "big")) + plain[33:]
    assert strip_metadata(gamma, "png") is None  # gamma 1.0: the re-encodes would differ
    assert strip_metadata(srgb_gamma, "png") is not None


def test_an_avif_tagged_wide_gamut_is_not_published_as_it_is():
    avif = save(_flat_rgb(), "AVIF", quality=60)
    at = avif.find(b"colrnclx")
    assert at > 0 and strip_metadata(avif, "avif") == avif
    p3 = avif[: at + 8] + (12).to_bytes(2, "big") + avif[at + 10 :]  # Display P3 primaries
    assert strip_metadata(p3, "avif") is None


def test_a_kept_copyright_is_never_lost_to_the_source_s_own_file(photo):
    exif = Image.Exif()
    exif[0x8298] = "(c) Northwind"
    data = save(photo, "WEBP", quality=75, exif=exif)
    rendering = render(data, Profile(keep_metadata=True))
    assert rendering.original.format != "webp" or rendering.original.data != data
    assert Image.open(io.BytesIO(rendering.original.data)).getexif().get(0x8298) == "(c) Northwind"


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body).to_bytes(4, "big")
    return len(body).to_bytes(4, "big") + kind + body + crc


def test_an_avif_s_exif_and_xmp_are_blanked_in_place(photo):
    exif = private_exif()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>Jane Owner, 48.85N</rdf:RDF></x:xmpmeta>'
    data = save(photo, "AVIF", quality=50, exif=exif, xmp=xmp)
    stripped = strip_metadata(data, "avif")
    assert stripped is not None and len(stripped) == len(data)
    assert b"Jane Owner" in data and b"Jane Owner" not in stripped
    clean = Image.open(io.BytesIO(stripped))
    assert clean.tobytes() == Image.open(io.BytesIO(data)).tobytes()
    assert not clean.getexif() and not (clean.info.get("xmp") or b"").strip()
    # A camera AVIF is therefore never published larger than it came.
    assert render(data, Profile()).original.size <= len(data)

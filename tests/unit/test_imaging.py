"""The imaging engine on real pixels: orientation, colour, alpha, animation, safety.

Images are generated in code (a few dozen pixels each); photos shipped in ``demo/photos``
stand in for the real world where only a real camera file will do.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import warnings

import pytest
from PIL import Image, ImageChops, ImageCms, ImageOps, ImageStat

from pipeline.errors import ImageRejected, PermanentError
from pipeline.imaging import (
    Output,
    Placeholder,
    Profile,
    Rendering,
    SourceInfo,
    probe,
    profile_from_dict,
    render,
)
from tests.unit.imaging_samples import (
    BLUE,
    GREEN,
    PHOTOS,
    RED,
    YELLOW,
    animation,
    decode,
    oriented_jpeg,
    palette_with_transparency,
    photo_icc,
    png_16bit_gray,
    png_16bit_rgb,
    png_header_only,
    quadrants,
    save,
    transparent_logo,
)

SMALL = profile_from_dict("small", {"widths": [16, 32], "max_original": 64})


def small(**overrides: object) -> Profile:
    return profile_from_dict("small", {"widths": [16, 32], "max_original": 64, **overrides})


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=False))


def pixel(output: Output, xy_fraction: tuple[float, float]) -> tuple[int, ...]:
    im = decode(output.data).convert("RGBA")
    x = min(int(xy_fraction[0] * im.width), im.width - 1)
    y = min(int(xy_fraction[1] * im.height), im.height - 1)
    return im.getpixel((x, y))


def by(rendering: Rendering, name: str, fmt: str) -> Output:
    return next(o for o in rendering.outputs if o.name == name and o.format == fmt)


# -- the result shape ------------------------------------------------------------------


def test_render_returns_frozen_results_with_source_facts_and_hashes():
    data = save(quadrants((100, 50)), "PNG")
    rendering = render(data, SMALL)

    assert rendering.source == SourceInfo(
        format="png",
        width=100,
        height=50,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        mode="RGB",
        lossless=True,
    )
    assert rendering.source.bytes == len(data)
    assert rendering.content == "graphic"  # four flat colours: its fallback is PNG
    names = [(o.name, o.format) for o in rendering.outputs]
    assert names == [
        ("original", "png"),
        ("w16", "avif"), ("w16", "webp"), ("w16", "png"),
        ("w32", "avif"), ("w32", "webp"), ("w32", "png"),
    ]  # fmt: skip
    original = rendering.original
    assert (original.width, original.height) == (64, 32)  # long edge capped at max_original
    for output in rendering.outputs:
        assert output.sha256 == hashlib.sha256(output.data).hexdigest()
        assert output.size == len(output.data)
        assert decode(output.data).size == (output.width, output.height)
    assert by(rendering, "w32", "webp").content_type == "image/webp"
    assert original.extension == "png" and original.content_type == "image/png"
    assert [o.width for o in rendering.variants("avif")] == [16, 32]
    with pytest.raises(AttributeError):
        rendering.outputs = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        original.data = b""  # type: ignore[misc]


def test_same_input_and_profile_give_identical_bytes():
    data = save(transparent_logo((90, 70)), "PNG")
    profile = small(formats=["avif", "webp", "jpeg", "fallback"], content="photo")
    first, second = render(data, profile), render(data, profile)
    assert [o.sha256 for o in first.outputs] == [o.sha256 for o in second.outputs]
    assert first.placeholder == second.placeholder
    assert {o.format for o in first.outputs} == {"avif", "webp", "jpeg", "png"}


def test_never_upscale_skips_wider_variants_and_records_why():
    data = save(quadrants((500, 300)), "JPEG")
    rendering = render(data, Profile())

    assert rendering.original.width == 500  # not enlarged to 2560
    assert {o.name for o in rendering.outputs} == {"original", "w320", "w500"}  # w500: its own
    assert max(o.width for o in rendering.outputs) == 500
    assert [(s.name, s.width) for s in rendering.skipped] == [
        ("w640", 640), ("w1024", 1024), ("w1600", 1600),
    ]  # fmt: skip
    assert rendering.skipped[0].reason == "wider than the 500px source"


def test_variant_equal_to_source_width_is_rendered_and_shares_the_encode():
    data = save(quadrants((32, 20)), "BMP")  # not a web format: the original is re-encoded
    rendering = render(data, small())
    assert not rendering.skipped
    assert by(rendering, "w32", "png").data == rendering.original.data  # encoded once


def test_placeholder_is_the_dominant_colour_and_a_tiny_webp():
    im = Image.new("RGB", (120, 80), BLUE)
    im.paste(RED, (0, 0, 20, 20))  # a little red does not change the dominant colour
    placeholder = render(save(im, "PNG"), SMALL).placeholder

    assert isinstance(placeholder, Placeholder)
    assert close_to(bytes.fromhex(placeholder.color[1:]), BLUE, 10)
    prefix = "data:image/webp;base64,"
    assert placeholder.preview.startswith(prefix)
    preview = decode(base64.b64decode(placeholder.preview[len(prefix) :]))
    assert preview.format == "WEBP" and max(preview.size) == 16
    assert (placeholder.width, placeholder.height) == preview.size
    assert len(placeholder.preview) < 400


# -- orientation -----------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_for_all_eight_values(orientation):
    upright = quadrants((64, 48))
    data = oriented_jpeg(orientation, upright)
    rendering = render(data, small(formats=["webp"]))

    assert rendering.source.orientation == orientation
    assert (rendering.source.width, rendering.source.height) == (64, 48)
    for output in (rendering.original, by(rendering, "w32", "webp")):
        assert output.height * 64 == output.width * 48  # landscape, as displayed
        assert close_to(pixel(output, (0.2, 0.2)), (*RED, 255))
        assert close_to(pixel(output, (0.8, 0.2)), (*GREEN, 255))
        assert close_to(pixel(output, (0.2, 0.8)), (*BLUE, 255))
        assert close_to(pixel(output, (0.8, 0.8)), (*YELLOW, 255))
        assert 0x0112 not in decode(output.data).getexif()  # not rotated twice by viewers


@pytest.mark.parametrize("orientation", [2, 6, 7])
def test_tiff_orientation_is_applied_once(orientation):
    # Pillow's TIFF decoder turns the image upright itself; doing it again would be wrong.
    upright = quadrants((64, 48))
    stored = Image.open(io.BytesIO(oriented_jpeg(orientation, upright))).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    rendering = render(save(stored, "TIFF", exif=exif), small(formats=["webp"]))
    assert (rendering.source.width, rendering.source.height) == (64, 48)
    assert close_to(pixel(rendering.original, (0.2, 0.2)), (*RED, 255))
    assert close_to(pixel(rendering.original, (0.8, 0.8)), (*YELLOW, 255))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_crop_focal_point_is_in_displayed_coordinates(orientation):
    upright = Image.new("RGB", (80, 40), RED)
    upright.paste(BLUE, (40, 0, 80, 40))  # left half red, right half blue
    data = oriented_jpeg(orientation, upright)

    left = render(data, small(aspect="1:1", focal_point=[0, 0.5], formats=["webp"]))
    right = render(data, small(aspect="1:1", focal_point=[1, 0.5], formats=["webp"]))

    assert (left.original.width, left.original.height) == (40, 40)
    assert close_to(pixel(left.original, (0.5, 0.5)), (*RED, 255))
    assert close_to(pixel(right.original, (0.5, 0.5)), (*BLUE, 255))


def test_real_iphone_photo_with_orientation_6_comes_out_upright_in_srgb():
    # The iPhone's own EXIF (orientation 6) and Display P3 profile, resized to 2688x2016.
    data = (PHOTOS / "02_iphone_5mp_orient6_p3.jpg").read_bytes()
    profile = profile_from_dict(
        "photo", {"widths": [320], "formats": ["webp"], "max_original": 640}
    )
    rendering = render(data, profile)

    assert rendering.source.orientation == 6
    assert (rendering.source.width, rendering.source.height) == (2016, 2688)
    original = rendering.original
    assert (original.width, original.height) == (480, 640)  # portrait, as displayed
    out = decode(original.data)
    assert "icc_profile" not in out.info and not out.getexif()  # P3 converted, EXIF gone

    with Image.open(io.BytesIO(data)) as reference:
        reference.draft("RGB", (672, 504))
        reference = ImageOps.exif_transpose(reference)
        p3 = ImageCms.ImageCmsProfile(io.BytesIO(reference.info["icc_profile"]))
        reference = ImageCms.profileToProfile(reference, p3, ImageCms.createProfile("sRGB"))
        reference = reference.resize(out.size, Image.Resampling.LANCZOS)
    difference = ImageStat.Stat(ImageChops.difference(out.convert("RGB"), reference)).mean
    assert max(difference) < 4  # same picture, same colours; unrotated it would be ~50


# -- colour ----------------------------------------------------------------------------


def test_icc_profile_other_than_srgb_is_converted_to_srgb():
    p3 = photo_icc("02_iphone_5mp_orient6_p3.jpg")
    colour = (200, 100, 50)
    data = save(Image.new("RGB", (40, 30), colour), "PNG", icc_profile=p3)

    rendering = render(data, small(formats=["png"]))

    expected = ImageCms.profileToProfile(
        Image.new("RGB", (1, 1), colour),
        ImageCms.ImageCmsProfile(io.BytesIO(p3)),
        ImageCms.createProfile("sRGB"),
    ).getpixel((0, 0))
    got = pixel(by(rendering, "w16", "png"), (0.5, 0.5))[:3]
    assert got != colour
    assert close_to(got, expected, 2)
    assert "icc_profile" not in decode(by(rendering, "w16", "png").data).info


def test_srgb_tagged_image_is_left_alone():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    colour = (200, 100, 50)
    data = save(Image.new("RGB", (40, 30), colour), "PNG", icc_profile=srgb)
    got = pixel(by(render(data, small(formats=["png"])), "w16", "png"), (0.5, 0.5))[:3]
    assert got == colour


def test_cmyk_jpeg_becomes_rgb():
    data = save(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", quality=95)
    rendering = render(data, small(formats=["webp"]))
    assert rendering.source.mode == "CMYK"
    assert decode(rendering.original.data).mode == "RGB"
    assert close_to(pixel(rendering.original, (0.5, 0.5)), (*RED, 255))


def test_grayscale_stays_gray_and_16_bit_is_scaled_not_clipped():
    rendering = render(png_16bit_gray((40, 20), value=32768), small(formats=["webp"]))
    assert rendering.source.mode == "I;16"
    original = decode(rendering.original.data)
    assert original.mode == "L"  # a gray JPEG, a third of the samples
    assert abs(original.getpixel((20, 10)) - 128) <= 2  # 32768/65535, not clipped to 255
    r, g, b, _ = pixel(by(rendering, "w16", "webp"), (0.5, 0.5))
    assert abs(r - 128) <= 3 and abs(g - 128) <= 3 and abs(b - 128) <= 3


def test_16_bit_rgb_png_keeps_its_colour():
    data = png_16bit_rgb((40, 20), (65535, 32896, 0))
    rendering = render(data, small(formats=["png"]))
    assert close_to(pixel(by(rendering, "w16", "png"), (0.5, 0.5)), (255, 128, 0, 255), 2)


def test_bilevel_tiff_and_bmp_are_accepted():
    bilevel = Image.new("1", (40, 30), 1)
    for fmt, token in (("TIFF", "tiff"), ("BMP", "bmp")):
        rendering = render(save(bilevel, fmt), small(formats=["webp"]))
        assert rendering.source.format == token
        assert pixel(rendering.original, (0.5, 0.5))[:3] == (255, 255, 255)


def test_avif_and_webp_inputs_are_accepted():
    for fmt, token in (("AVIF", "avif"), ("WEBP", "webp")):
        data = save(quadrants((64, 48)), fmt, quality=90)
        rendering = render(data, small(formats=["webp"]))
        assert rendering.source.format == token
        assert close_to(pixel(rendering.original, (0.2, 0.2)), (*RED, 255), 60)


# -- transparency ----------------------------------------------------------------------


def test_alpha_is_kept_in_formats_that_have_it_and_fallback_is_png():
    data = save(transparent_logo(), "PNG")
    rendering = render(data, small())

    assert rendering.source.has_alpha
    assert rendering.original.format == "png"
    assert {o.format for o in rendering.outputs} == {"png", "avif", "webp"}
    for output in rendering.outputs:
        assert decode(output.data).mode in ("RGBA", "LA", "PA", "P")
        assert pixel(output, (0.02, 0.02))[3] <= 4  # corner: transparent (AVIF alpha is lossy)
        assert close_to(pixel(output, (0.5, 0.5)), (*RED, 255))  # middle: opaque red


def test_transparent_png_is_flattened_onto_the_background_only_for_jpeg():
    data = save(transparent_logo(), "PNG")
    # A profile that forces photographs: JPEG is never made of a graphic.
    white = render(data, small(formats=["jpeg", "webp"], content="photo"))
    navy = render(data, small(formats=["jpeg"], background="navy", content="photo"))

    corner = pixel(by(white, "w32", "jpeg"), (0.02, 0.02))
    assert close_to(corner, (255, 255, 255, 255), 8)  # white, never black
    assert close_to(pixel(by(navy, "w32", "jpeg"), (0.02, 0.02)), (0, 0, 128, 255), 16)
    assert pixel(by(white, "w32", "webp"), (0.02, 0.02))[3] == 0
    # Resizing must not bleed the hidden black of transparent pixels into the edges.
    edge = decode(by(white, "w16", "webp").data).convert("RGBA")
    for r, g, b, a in edge.get_flattened_data():
        if a > 64:
            assert r > 200 and g < 60 and b < 60, (r, g, b, a)


def test_palette_with_transparency_keeps_it():
    for fmt in ("PNG", "GIF"):
        data = save(palette_with_transparency(), fmt)
        rendering = render(data, small(formats=["webp"]))
        assert rendering.source.has_alpha
        assert rendering.original.format == "png"
        assert pixel(by(rendering, "w32", "webp"), (0.02, 0.02))[3] == 0
        assert close_to(pixel(by(rendering, "w32", "webp"), (0.5, 0.5)), (*GREEN, 255))


def test_unused_alpha_channel_is_dropped_and_fallback_is_jpeg():
    data = save(quadrants().convert("RGBA"), "PNG")
    rendering = render(data, small(content="photo"))  # a graphic's fallback is PNG anyway
    assert not rendering.source.has_alpha
    assert by(rendering, "w32", "jpeg").frames == 1


# -- animation -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_is_kept_where_the_format_allows(fmt):
    data = animation(fmt, [RED, GREEN, BLUE])
    rendering = render(data, small(formats=["webp", "avif", "jpeg", "fallback"]))

    assert rendering.source.animated and rendering.source.frames == 3
    # The original keeps the animation: animated WebP, or the source's own file if smaller.
    assert rendering.original.format in ("webp", fmt.lower())
    assert rendering.original.frames == 3
    assert {o.format for o in rendering.variants("png")} == {"png"}  # the still poster
    for output in rendering.outputs:
        im = Image.open(io.BytesIO(output.data))
        expected = 1 if output.format in ("jpeg", "png") else 3
        assert output.frames == expected
        assert getattr(im, "n_frames", 1) == expected
        colours = []
        for index in range(expected):
            im.seek(index)
            colours.append(im.convert("RGB").getpixel((im.width // 2, im.height // 2)))
        assert all(close_to(c, e, 60) for c, e in zip(colours, [RED, GREEN, BLUE], strict=False))
    webp = Image.open(io.BytesIO(by(rendering, "w16", "webp").data))
    webp.seek(1)
    webp.load()
    assert webp.info["duration"] == 120  # per-frame timing survives


def test_animation_is_flattened_to_its_first_frame_when_the_profile_says_so():
    data = animation("GIF", [RED, GREEN, BLUE])
    rendering = render(data, small(keep_animation=False, formats=["webp"]))
    assert rendering.original.format == "png"  # a flat-coloured graphic
    for output in rendering.outputs:
        assert output.frames == 1
        assert getattr(Image.open(io.BytesIO(output.data)), "n_frames", 1) == 1
        assert close_to(pixel(output, (0.5, 0.5)), (*RED, 255))


def test_frame_count_is_bounded():
    data = animation("GIF", [RED, GREEN, BLUE, YELLOW])
    rendering = render(data, small(max_frames=3, formats=["webp"]))
    assert rendering.source.frames == 4
    assert all(o.frames == 1 for o in rendering.outputs)


# -- metadata --------------------------------------------------------------------------


def _tagged_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Camera Maker"  # Make
    exif[0x8298] = "(c) Jane Doe"  # Copyright
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 30.0)  # GPSLatitude
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    return save(quadrants(), "JPEG", exif=exif, xmp=xmp, comment=b"secret")


def test_metadata_is_stripped_by_default():
    rendering = render(_tagged_jpeg(), small())
    for output in rendering.outputs:
        im = decode(output.data)
        assert not im.getexif(), output
        assert "xmp" not in im.info and "comment" not in im.info
        assert b"Jane Doe" not in output.data and b"secret" not in output.data
        assert b"Camera Maker" not in output.data


def test_keep_metadata_keeps_copyright_and_icc_but_not_gps():
    rendering = render(_tagged_jpeg(), small(keep_metadata=True, formats=["webp", "jpeg"]))
    for output in rendering.outputs:
        exif = decode(output.data).getexif()
        assert exif[0x8298] == "(c) Jane Doe"
        assert 0x010F not in exif and 0x8825 not in exif
        assert b"Camera Maker" not in output.data

    p3 = photo_icc("02_iphone_5mp_orient6_p3.jpg")
    data = save(Image.new("RGB", (40, 30), (200, 100, 50)), "PNG", icc_profile=p3)
    converted = render(data, small(keep_metadata=True, formats=["webp"]))
    icc = decode(converted.original.data).info["icc_profile"]
    description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    assert "sRGB" in description  # the pixels are sRGB now, and say so


# -- rejections ------------------------------------------------------------------------


def _rejected(data: bytes, profile: Profile = SMALL) -> str:
    with pytest.raises(ImageRejected) as caught:
        render(data, profile)
    assert isinstance(caught.value, PermanentError)
    assert "\n" not in caught.value.reason
    return caught.value.reason


def test_truncated_files_are_rejected():
    jpeg = save(quadrants((300, 200)), "JPEG", quality=95)
    png = save(Image.effect_noise((200, 200), 50), "PNG")
    assert _rejected(jpeg[: len(jpeg) // 2]) == "truncated JPEG"
    assert _rejected(png[: len(png) // 2]) == "truncated PNG"


def test_truncated_jpeg_passes_the_header_only_probe_but_not_render():
    jpeg = save(quadrants((300, 200)), "JPEG")
    assert probe(jpeg[: len(jpeg) // 2]).width == 300
    assert _rejected(jpeg[: len(jpeg) // 2]) == "truncated JPEG"


def test_corrupt_data_is_rejected_with_the_format():
    png = bytearray(save(quadrants((200, 150)), "PNG"))
    png[60:80] = b"\xff" * 20  # damaged compressed data
    assert _rejected(bytes(png)) == "corrupt PNG (broken data stream when reading image file)"
    gif = bytearray(save(quadrants((300, 200)), "GIF"))
    gif[len(gif) // 2 : len(gif) // 2 + 20] = b"\xff" * 20
    assert _rejected(bytes(gif)).startswith("corrupt GIF")
    assert _rejected(b"\xff\xd8\xff\xe0" + b"\x00" * 40) == "corrupt JPEG: unreadable header"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"hello, world\n", "not an image: text"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "not an image: HTML"),
        (b'<?xml version="1.0"?><feed></feed>', "not an image: XML"),
        (b"%PDF-1.7\n...", "not an image: PDF"),
        (b"PK\x03\x04" + b"\x00" * 30, "not an image: ZIP archive"),
        (b"\x00\x01\x02\x03" * 10, "not an image: unrecognised content"),
        (b"8BPS\x00\x01" + b"\x00" * 30, "unsupported image format: Photoshop PSD"),
    ],
)
def test_not_an_image_is_rejected_with_what_it_is(data, reason):
    assert _rejected(data) == reason


def test_html_named_png_is_judged_by_content(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(b"<html><head><script>alert(1)</script></head></html>")
    assert _rejected(path.read_bytes()) == "not an image: HTML"


def test_svg_with_script_is_rejected():
    svg = (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" '
        b'height="10"><script>alert(document.cookie)</script><rect width="10" height="10"/></svg>'
    )
    assert _rejected(svg) == "SVG is not accepted (vector images can carry scripts)"


def test_heic_is_rejected_when_no_codec_is_installed(monkeypatch):
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 32
    monkeypatch.delitem(Image.OPEN, "HEIF", raising=False)  # as without pillow-heif:
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # importing it fails
    assert _rejected(heic) == "HEIC is not supported by the installed codecs (install pillow-heif)"


def test_decompression_bomb_is_rejected_from_the_header():
    bomb = png_header_only(34000, 34000)
    assert len(bomb) < 100
    assert _rejected(bomb) == "34000x34000 exceeds the 50 MP limit"
    with pytest.raises(ImageRejected, match="34000x34000 exceeds the 50 MP limit"):
        probe(bomb)


def test_pixel_budget_is_ours_and_pillow_never_warns():
    big = png_header_only(10000, 10000)  # 100 MP: Pillow would only warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _rejected(big) == "10000x10000 exceeds the 50 MP limit"
    assert Image.MAX_IMAGE_PIXELS is not None  # never disabled globally
    tight = small(max_pixels=1000)
    assert _rejected(save(quadrants((50, 40)), "PNG"), tight) == "50x40 exceeds the 0.001 MP limit"


def test_file_size_limit():
    data = save(Image.effect_noise((64, 64), 50), "PNG")
    reason = _rejected(data, small(max_bytes=1024))
    assert reason.endswith("exceeds the 1 KiB file size limit")


# -- probe -----------------------------------------------------------------------------


def test_probe_reads_the_header_only():
    data = oriented_jpeg(6, quadrants((64, 48)))
    info = probe(data)
    assert (info.format, info.width, info.height, info.orientation) == ("jpeg", 64, 48, 6)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)

    gif = probe(animation("GIF", [RED, GREEN]))
    assert (gif.format, gif.animated, gif.frames) == ("gif", True, 2)
    assert probe(save(transparent_logo(), "PNG")).has_alpha


# --- JPEG quality: never re-encoded above the source's own ---------------------------------


def _photo(size: tuple[int, int]) -> Image.Image:
    with Image.open(PHOTOS / "19_cabin_640.jpg") as im:
        return im.convert("RGB").resize(size)


@pytest.mark.parametrize("quality", [30, 50, 75, 82, 95])
def test_the_quality_a_jpeg_was_saved_at_is_read_from_its_tables(quality: int) -> None:
    data = save(_photo((160, 120)), "JPEG", quality=quality)
    assert probe(data).jpeg_quality == quality
    assert probe(save(_photo((160, 120)), "PNG")).jpeg_quality is None


def test_a_low_quality_jpeg_is_not_re_encoded_above_its_quality() -> None:
    from pipeline.imaging.detect import jpeg_quality

    data = save(_photo((640, 480)), "JPEG", quality=50)
    rendering = render(data, Profile(widths=(320,), formats=("fallback",)))
    original = next(o for o in rendering.outputs if o.name == "original")
    smaller = next(o for o in rendering.outputs if o.name == "w320")
    assert (original.width, original.format) == (640, "jpeg")
    with Image.open(io.BytesIO(original.data)) as im:
        assert jpeg_quality(im) == 50  # not the profile's 82
    assert original.size <= len(data)
    # Downscaled, the source's artifacts average out: the profile's quality again.
    with Image.open(io.BytesIO(smaller.data)) as im:
        assert jpeg_quality(im) == Profile().quality["jpeg"]
    # A source saved above the profile's quality gets the profile's.
    fine = render(save(_photo((640, 480)), "JPEG", quality=95), Profile(formats=("fallback",)))
    with Image.open(io.BytesIO(fine.outputs[0].data)) as im:
        assert jpeg_quality(im) == Profile().quality["jpeg"]

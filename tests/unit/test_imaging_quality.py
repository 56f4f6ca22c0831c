"""Auto-quality, the SSIMULACRA2 metric, JPEG XL and wide-gamut colour, on generated images.

The images are made here (a few hundred pixels): a flat gradient and a detailed texture
differ in how much quality they need; a Display P3 file (its profile taken from the
shipped iPhone photo) has colours outside sRGB.
"""

from __future__ import annotations

import io
import pickle
import sys

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageDraw

from pipeline.errors import ProfileError
from pipeline.imaging import profile_from_dict, render
from pipeline.imaging.autoquality import LEVELS, TOLERANCE, QualityTarget, Search, _next, mosaic
from pipeline.imaging.encode import encode
from pipeline.imaging.perceptual import Reference, ssimulacra2
from tests.unit.imaging_samples import PHOTOS, decode, photo_icc, save

P3_PHOTO = "02_iphone_5mp_orient6_p3.jpg"
#: Our float32 metric against the ssimulacra2 package's float64: measured within 0.01.
PACKAGE_TOLERANCE = 0.05


def flat(size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A smooth two-colour gradient: what an encoder needs little quality for."""
    w, h = size
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    rgb = np.array([70, 120, 180]) * (1 - x) + np.array([200, 170, 120]) * x + 20 * y
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def noise(size: tuple[int, int] = (320, 240), seed: int = 14) -> Image.Image:
    """Texture at several scales (foliage, gravel): what the metric tests compare on."""
    rng = np.random.default_rng(seed)
    w, h = size
    fine = rng.normal(0, 40, (h, w, 3))
    coarse = np.asarray(
        Image.fromarray(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)).resize(
            (w, h), Image.Resampling.BICUBIC
        ),
        dtype=np.float64,
    )
    return Image.fromarray(np.clip(coarse * 0.7 + fine + 40, 0, 255).astype(np.uint8), "RGB")


def detailed(size: tuple[int, int] = (320, 240), seed: int = 14) -> Image.Image:
    """Hundreds of thin lines and small sharp shapes on the gradient: edges ring and
    blur in every lossy codec, so it needs much more quality than ``flat``. (Random
    noise would not do: it hides the codecs' artifacts from the metric.)"""
    rng = np.random.default_rng(seed)
    image = flat(size)
    draw = ImageDraw.Draw(image)
    for _ in range(300):
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            end = (x + int(rng.integers(-40, 40)), y + int(rng.integers(-40, 40)))
            draw.line((x, y, *end), fill=colour, width=1)
        else:
            corner = (x + int(rng.integers(2, 12)), y + int(rng.integers(2, 12)))
            draw.rectangle((x, y, *corner), fill=colour)
    return image


def as_jpeg(im: Image.Image) -> bytes:
    return save(im, "JPEG", quality=98)


def auto(target: object = "high", bounds: dict | None = None, **overrides: object):
    spec = {"widths": [320], "formats": ["avif", "webp", "jpeg"], "max_original": 320}
    quality = {"target": target, **({"bounds": bounds} if bounds else {})}
    return profile_from_dict("auto", {**spec, "quality": quality, **overrides})


def shown(data: bytes) -> Image.Image:
    return decode(data).convert("RGB")


# -- the metric ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(300, 260), (120, 90)])
@pytest.mark.parametrize("quality", [30, 70, 90])
def test_metric_agrees_with_the_ssimulacra2_package(tmp_path, size, quality):
    package = pytest.importorskip("ssimulacra2", reason="the ssimulacra2 package is a test tool")
    reference = noise(size) if size[0] < 200 else detailed(size)
    distorted = shown(save(reference, "JPEG", quality=quality))
    reference.save(tmp_path / "ref.png")
    distorted.save(tmp_path / "dist.png")

    expected = package.compute_ssimulacra2(tmp_path / "ref.png", tmp_path / "dist.png")
    # pad=False: the reference's own behaviour on images under 6 scales (120x90).
    assert ssimulacra2(reference, distorted, pad=False) == pytest.approx(
        expected, abs=PACKAGE_TOLERANCE
    )


def test_metric_scale_identical_is_100_and_worse_is_lower():
    image = noise()
    ref = Reference(image)
    assert ref.score(image) == pytest.approx(100.0)
    scores = [ref.score(shown(save(image, "JPEG", quality=q))) for q in (20, 60, 95)]
    assert scores == sorted(scores)


@pytest.mark.parametrize("name", ["13_family_970.jpg", "19_cabin_640.jpg"])
def test_small_images_are_mirrored_out_to_six_scales(name):
    # Under 225 px a side the reference's weights shift: a photo cropped to 320x200
    # scores 15-25 points under the same photo at 320x240. Mirrored, the two agree.
    with Image.open(PHOTOS / name) as im:
        photo = im.convert("RGB").resize((320, 240))
    scores = {}
    for height in (200, 240):
        image = photo.crop((0, 0, 320, height))
        distorted = shown(save(image, "JPEG", quality=90))
        scores[height] = (ssimulacra2(image, distorted, pad=False), ssimulacra2(image, distorted))
    (shifted, padded), (six, six_padded) = scores[200], scores[240]
    assert six == six_padded  # 240 px needs no mirroring
    assert abs(padded - six) < 3 < 15 < abs(shifted - six)


# -- auto-quality ----------------------------------------------------------------------


def test_flat_and_detailed_images_get_different_qualities_at_one_target():
    flat_out = render(as_jpeg(flat()), auto())
    detailed_out = render(as_jpeg(detailed()), auto())
    for fmt in ("avif", "webp", "jpeg"):
        easy = flat_out.variants(fmt)[0]
        hard = detailed_out.variants(fmt)[0]
        assert easy.quality is not None and hard.quality is not None
        assert easy.quality < hard.quality, fmt


@pytest.mark.parametrize("target", ["medium", "high", 80])
@pytest.mark.parametrize("make", [flat, detailed])
def test_the_target_is_reached_within_the_bounds(make, target):
    source = make()
    profile = auto(target)
    floor = LEVELS.get(target, target)
    rendering = render(as_jpeg(source), profile)
    reference = Reference(shown(as_jpeg(source)))  # the decoded source, not resized (320)
    for out in rendering.outputs:
        if out.name == "original":
            continue
        low, high = profile.auto.bounds[out.format]
        measured = reference.score(shown(out.data))
        assert low <= out.quality <= high
        # Outputs this small are probed whole: the score recorded is the output's own.
        assert measured == pytest.approx(out.score, abs=0.01)
        assert measured >= floor or out.quality == high, (out.format, measured, out.quality)


def test_webp_accepts_a_narrower_band_than_avif():
    # One probe 1.5 above the goal: enough for AVIF's 2-point band, not WebP's 1 point.
    assert TOLERANCE["webp"] < 1.5 < TOLERANCE["avif"]
    assert _next({80: 73.5}, 72.0, 30, 95, 0.6, TOLERANCE["avif"]) is None
    assert _next({80: 73.5}, 72.0, 30, 95, 0.6, TOLERANCE["webp"]) == 79


def test_an_unreachable_target_stops_at_the_upper_bound():
    profile = auto("very high", bounds={"webp": [40, 50]}, formats=["webp"])
    out = render(as_jpeg(detailed()), profile).variants("webp")[0]
    assert out.quality == 50
    assert out.score < LEVELS["very high"]


def test_fixed_quality_stays_the_default_and_is_recorded():
    profile = profile_from_dict("fixed", {"widths": [320], "formats": ["webp", "jpeg"]})
    assert profile.auto is None
    rendering = render(as_jpeg(detailed()), profile)
    webp = rendering.variants("webp")[0]
    assert (webp.quality, webp.score) == (80, None)


def test_a_mosaic_is_tiles_of_the_image_at_its_own_scale():
    image = noise((1200, 800))
    tiles = mosaic(image)
    assert tiles.size == (256, 256)
    # The first tile is a crop of the image, not a resize.
    corner = tiles.crop((0, 0, 64, 64))
    found = any(
        corner.tobytes() == image.crop((x, y, x + 64, y + 64)).tobytes()
        for x in range(0, 400, 16)
        for y in range(0, 400, 16)
    )
    assert found


def test_webp_is_probed_on_a_larger_mosaic_than_avif_and_jpeg():
    # WebP probes are cheap: 5 x 5 tiles (320 px) for it, 4 x 4 (256 px) for the others.
    image = noise((1200, 800))
    profile = profile_from_dict("p", {"formats": ["webp", "avif", "jpeg"]})
    search = Search(QualityTarget(LEVELS["high"]))
    probed: dict[str, set[tuple[int, int]]] = {}
    for fmt in ("webp", "avif", "jpeg"):

        def probe(im: Image.Image, quality: int, fmt: str = fmt) -> bytes:
            probed.setdefault(fmt, set()).add(im.size)
            return encode([im], fmt, profile, quality=quality)[0]

        choice = search.choose(image, fmt, probe)
        assert choice.data is None  # a mosaic's bytes are not the output's
    assert probed == {"webp": {(320, 320)}, "avif": {(256, 256)}, "jpeg": {(256, 256)}}


def test_large_outputs_are_searched_on_the_mosaic_and_stay_near_the_target():
    profile = auto("high", widths=[1024], max_original=1024, formats=["webp"])
    source = detailed((1024, 768))
    rendering = render(as_jpeg(source), profile)
    out = rendering.variants("webp")[0]
    measured = Reference(shown(as_jpeg(source))).score(shown(out.data))
    # The mosaic predicts the full-size score within a few points (README: Performance).
    assert abs(measured - out.score) < 5
    assert measured > LEVELS["high"] - 5


# -- profiles --------------------------------------------------------------------------


def test_auto_profile_round_trips_and_pickles():
    profile = auto("high", bounds={"avif": [30, 70]})
    data = profile.as_dict()
    assert data["quality"]["target"] == "high"
    assert data["quality"]["bounds"] == {"avif": [30, 70]}
    again = profile_from_dict("auto", data)
    assert again == profile and again.fingerprint == profile.fingerprint
    assert pickle.loads(pickle.dumps(profile)).auto == profile.auto
    assert profile.fingerprint != auto("medium").fingerprint
    assert auto(70).auto.score == 70.0


@pytest.mark.parametrize(
    ("quality", "message"),
    [
        ({"target": "great"}, "is not a level"),
        ({"target": 5}, "score from 10 to 100"),
        ({"target": True}, "score from 10 to 100"),
        ({"bounds": {"avif": [20, 60]}}, "needs a 'target'"),
        ({"target": "high", "bounds": {"png": [1, 2]}}, "auto-quality applies to"),
        ({"target": "high", "bounds": {"avif": [60, 20]}}, "lowest <= highest"),
        ({"target": "high", "bounds": {"avif": 60}}, "[lowest, highest]"),
        ({"target": "high", "bounds": [1, 2]}, "dict of format"),
    ],
)
def test_bad_targets_are_refused_with_a_reason(quality, message):
    with pytest.raises(ProfileError, match=message.replace("[", r"\[")):
        profile_from_dict("p", {"quality": quality})


def test_a_target_without_numpy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy -> ImportError
    with pytest.raises(ProfileError, match=r"django-media-pipeline\[quality\]"):
        profile_from_dict("p", {"quality": {"target": "high"}})
    profile_from_dict("p", {"quality": {"webp": 70}})  # fixed numbers need no numpy


# -- JPEG XL ---------------------------------------------------------------------------


def test_jpeg_xl_round_trips():
    pytest.importorskip(
        "pillow_jxl", reason="JPEG XL output needs pillow-jxl-plugin (extra 'jxl'); skipped"
    )
    source = detailed()
    for quality in (None, {"target": "high"}):
        spec = {"widths": [320], "formats": ["jxl", "fallback"], "max_original": 320}
        if quality:
            spec["quality"] = quality
        out = render(as_jpeg(source), profile_from_dict("jxl", spec)).variants("jxl")[0]
        assert (out.content_type, out.extension) == ("image/jxl", "jxl")
        assert out.data.startswith(b"\xff\x0a") or out.data[4:8] == b"JXL "
        image = decode(out.data)
        assert image.size == (320, 240)
        assert Reference(shown(as_jpeg(source))).score(image.convert("RGB")) > 50


def test_jpeg_xl_without_the_plugin_is_refused_by_name(monkeypatch):
    from pipeline.imaging import profiles

    monkeypatch.setattr(profiles, "jxl_available", lambda: False)
    with pytest.raises(ProfileError, match="pillow-jxl-plugin"):
        profile_from_dict("p", {"formats": ["jxl", "fallback"]})


# -- wide gamut ------------------------------------------------------------------------


def test_display_p3_is_kept_in_avif_and_webp_and_srgb_in_jpeg():
    p3 = photo_icc(P3_PHOTO)
    colour = (250, 20, 20)  # a P3 red outside sRGB
    pixels = np.asarray(detailed(), dtype=np.int16) // 8 - 16 + np.array(colour)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    data = save(image, "JPEG", quality=95, icc_profile=p3)
    rendering = render(data, auto(formats=["avif", "webp", "fallback"]))

    for fmt in ("avif", "webp"):
        out = rendering.variants(fmt)[0]
        assert decode(out.data).info.get("icc_profile") == p3, fmt
        assert out.score is not None  # searched in the source's own colours
    jpeg = rendering.variants("jpeg")[0]
    fallback = decode(jpeg.data)
    assert "icc_profile" not in fallback.info  # untagged: sRGB
    srgb = ImageCms.createProfile("sRGB")
    expected = ImageCms.profileToProfile(shown(data), io.BytesIO(p3), srgb)
    difference = np.abs(
        np.asarray(fallback.convert("RGB"), dtype=np.int16)
        - np.asarray(expected.resize(fallback.size), dtype=np.int16)
    )
    assert difference.mean() < 4
    # The placeholder is sRGB too: its colour is the converted red, not the P3 numbers.
    assert rendering.placeholder.color != "#fa1414"


def test_fixed_mode_keeps_p3_too_and_the_original_fallback_is_srgb():
    p3 = photo_icc(P3_PHOTO)
    data = save(detailed(), "JPEG", quality=95, icc_profile=p3)
    profile = profile_from_dict("p3", {"widths": [320], "max_original": 320})
    rendering = render(data, profile)
    assert decode(rendering.variants("avif")[0].data).info.get("icc_profile") == p3
    assert "icc_profile" not in decode(rendering.original.data).info


# -- gain maps -------------------------------------------------------------------------


def test_a_gain_map_jpeg_renders_its_sdr_base_and_drops_the_gain_map():
    # UltraHDR: the SDR base image, then a grey gain map as a second MPF image.
    base = detailed()
    gain_map = Image.new("RGB", (160, 120), (200, 200, 200))
    data = save(base, "MPO", quality=95, save_all=True, append_images=[gain_map])
    assert decode(data).format == "MPO"

    rendering = render(data, profile_from_dict("hdr", {"widths": [320], "max_original": 320}))
    reference = Reference(shown(save(base, "JPEG", quality=95)))
    for out in rendering.outputs:
        assert out.frames == 1
        assert reference.score(shown(out.data)) > 60, out.format  # the base, not the map
        assert b"MPF" not in out.data

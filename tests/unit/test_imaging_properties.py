"""Property-based: whatever the size, mode and profile, outputs fit and decode."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.imaging import profile_from_dict, render

MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "CMYK"]
SOURCE_FORMATS = {
    "PNG": {"RGB", "RGBA", "L", "LA", "P", "1", "I;16"},
    "JPEG": {"RGB", "L", "CMYK"},
    "WEBP": {"RGB", "RGBA"},
    "GIF": {"P", "L", "1"},
    "TIFF": {"RGB", "RGBA", "L", "1", "CMYK", "I;16"},
    "BMP": {"RGB", "L", "P", "1"},
}
EXIF_FORMATS = {"PNG", "JPEG", "WEBP", "TIFF"}


@st.composite
def sources(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """(file bytes, displayed width, displayed height) of a random small image."""
    width = draw(st.integers(1, 240))
    height = draw(st.integers(1, 240))
    mode = draw(st.sampled_from(MODES))
    fmt = draw(st.sampled_from([f for f, modes in SOURCE_FORMATS.items() if mode in modes]))
    seed = draw(st.integers(0, 255))
    im = Image.linear_gradient("L").resize((width, height)).point(lambda v: (v + seed) % 256)
    if mode == "I;16":
        im = im.convert("I").point(lambda v: v * 257).convert("I;16")
    elif mode == "P":
        im = im.convert("RGB").quantize(16)
        if draw(st.booleans()):
            im.info["transparency"] = 0
    elif mode in ("RGBA", "LA"):
        alpha = Image.linear_gradient("L").resize((width, height)).rotate(90)
        im = Image.merge(mode, [*im.convert(mode[:-1]).split(), alpha])
    else:
        im = im.convert(mode)
    orientation = draw(st.integers(1, 8)) if fmt in EXIF_FORMATS else 1
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    im.save(buffer, fmt, **({"exif": exif} if fmt in EXIF_FORMATS else {}))
    shown = (height, width) if orientation >= 5 else (width, height)
    return buffer.getvalue(), *shown


profiles = st.builds(
    lambda widths, cap, formats, aspect: profile_from_dict(
        "prop", {"widths": widths, "max_original": cap, "formats": formats, "aspect": aspect}
    ),
    st.lists(st.integers(1, 300), min_size=1, max_size=4, unique=True),
    st.integers(1, 300),
    st.lists(
        st.sampled_from(["avif", "webp", "jpeg", "png", "gif", "fallback"]),
        min_size=1,
        max_size=3,
        unique=True,
    ),
    st.none() | st.sampled_from(["1:1", "16:9", "2:3"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=sources(), profile=profiles)
def test_no_output_exceeds_its_width_and_every_output_decodes(source, profile):
    data, width, height = source
    rendering = render(data, profile)

    assert (rendering.source.width, rendering.source.height) == (width, height)
    # The crop to the profile's aspect ratio is all the width there is to work with.
    cropped = (
        width if profile.aspect is None else min(width, max(1, round(height * profile.aspect)))
    )
    produced = {o.name for o in rendering.outputs}
    skipped = {s.name for s in rendering.skipped}
    # A source narrower than a width gets one variant at its own width instead.
    own = {f"w{cropped}"} if skipped and cropped not in profile.widths else set()
    assert produced | skipped == {"original", *own, *(f"w{w}" for w in profile.widths)}
    assert not produced & skipped
    for output in rendering.outputs:
        assert output.width <= cropped and output.height <= height  # never upscaled
        if output.name == "original":
            assert max(output.width, output.height) <= profile.max_original
        else:
            assert output.width == int(output.name[1:])
        im = Image.open(io.BytesIO(output.data))
        im.load()
        assert im.size == (output.width, output.height)
        assert im.format.lower() == output.format
    for skip in rendering.skipped:
        assert skip.width > cropped

"""What the engine drops on purpose is said, for the row to record (issue 10)."""

from __future__ import annotations

import io

from PIL import Image

from pipeline.imaging import profile_from_dict, render
from tests.unit.imaging_samples import animation


def test_an_animation_past_the_frame_budget_is_noted():
    gif = animation("GIF", [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)])
    rendering = render(gif, profile_from_dict("tight", {"max_frames": 3}))
    assert rendering.source.frames == 4
    assert any(n.startswith("animation dropped: 4 frames") for n in rendering.notes)

    kept = render(gif, profile_from_dict("roomy", {}))
    assert not any("animation" in n for n in kept.notes)


def test_an_animation_the_profile_does_not_keep_is_noted():
    gif = animation("GIF", [(255, 0, 0), (0, 255, 0)])
    rendering = render(gif, profile_from_dict("still", {"keep_animation": False}))
    assert any(n.startswith("animation not kept") for n in rendering.notes)


def test_stripped_metadata_is_noted_only_when_there_was_some():
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"  # Make
    with_exif, without = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (64, 48), "olive").save(with_exif, "JPEG", exif=exif)
    Image.new("RGB", (64, 48), "olive").save(without, "JPEG")

    profile = profile_from_dict("default", {})
    assert any(
        n.startswith("metadata removed") for n in render(with_exif.getvalue(), profile).notes
    )
    assert render(without.getvalue(), profile).notes == ()
    kept = render(with_exif.getvalue(), profile_from_dict("keep", {"keep_metadata": True}))
    assert not any(n.startswith("metadata removed") for n in kept.notes)

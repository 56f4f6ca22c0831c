"""Profiles: defaults, overrides, and a clear ProfileError for anything impossible."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from PIL import Image

from pipeline.errors import ProfileError
from pipeline.imaging import Profile, profile_from_dict


def test_defaults_match_the_documented_profile():
    profile = profile_from_dict("default", {})
    assert profile == Profile()
    assert profile.widths == (320, 640, 1024, 1600)
    assert profile.formats == ("avif", "webp", "fallback")
    assert profile.max_original == 2560
    assert profile.aspect is None and profile.focal_point == (0.5, 0.5)
    assert profile.keep_animation and not profile.keep_metadata
    assert profile.background == "#ffffff"
    assert profile.max_pixels == 50_000_000 < Image.MAX_IMAGE_PIXELS
    assert set(profile.quality) == {"avif", "webp", "jpeg", "jxl"}
    assert set(profile.effort) == {"avif", "webp", "jpeg", "png", "jxl"}
    assert profile.auto is None  # fixed qualities unless a profile asks for a target


def test_overrides_are_normalised():
    profile = profile_from_dict(
        "product",
        {
            "widths": [800, 400],
            "formats": ["WEBP", "fallback"],
            "quality": {"webp": 70},
            "aspect": "16:9",
            "focal_point": [0.25, 1],
            "background": "black",
        },
    )
    assert profile.name == "product"
    assert profile.widths == (400, 800)
    assert profile.formats == ("webp", "fallback")
    assert profile.quality["webp"] == 70
    assert profile.quality["jpeg"] == Profile().quality["jpeg"]  # merged over the defaults
    assert profile.aspect == pytest.approx(16 / 9)
    assert profile.focal_point == (0.25, 1.0)
    assert profile.background == "#000000"


@pytest.mark.parametrize(
    ("aspect", "ratio"), [("4:3", 4 / 3), ("3/2", 1.5), ([1, 1], 1.0), (2, 2.0)]
)
def test_aspect_spellings(aspect, ratio):
    assert profile_from_dict("p", {"aspect": aspect}).aspect == pytest.approx(ratio)


def test_unknown_keys_are_named():
    with pytest.raises(ProfileError, match="unknown key\\(s\\) 'widht'; known keys: widths"):
        profile_from_dict("p", {"widht": [100]})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"widths": []}, "widths must be a non-empty list"),
        ({"widths": "320"}, "widths must be a non-empty list"),
        ({"widths": [0]}, "each of widths must be an integer from 1 to 16383, got 0"),
        ({"widths": [True]}, "each of widths must be an integer"),
        ({"widths": [320.5]}, "each of widths must be an integer"),
        ({"widths": [20000]}, "from 1 to 16383, got 20000"),
        ({"widths": [320, 320]}, "must not repeat"),
        ({"formats": ["bmp"]}, "'bmp' is not an output format"),
        ({"formats": []}, "formats must be a non-empty list"),
        ({"formats": ["webp", "webp"]}, "must not repeat"),
        ({"quality": {"webp": 0}}, "quality\\['webp'\\] must be an integer from 1 to 100, got 0"),
        ({"quality": {"png": 80}}, "'png' has no quality setting"),
        ({"quality": 80}, "quality must be a dict"),
        ({"effort": {"webp": 9}}, "effort\\['webp'\\] must be an integer from 0 to 6, got 9"),
        ({"effort": {"avif": -1}}, "effort\\['avif'\\] must be an integer from 0 to 10"),
        ({"max_original": 0}, "max_original must be an integer from 1"),
        ({"aspect": "wide"}, "aspect must be a width:height ratio"),
        ({"aspect": "16:0"}, "aspect must be a width:height ratio"),
        ({"aspect": 0}, "aspect must be a width:height ratio"),
        ({"focal_point": [2, 0.5]}, "focal_point must be \\[x, y\\] as fractions"),
        ({"focal_point": 0.5}, "focal_point must be"),
        ({"background": "blurple"}, "background: 'blurple' is not a colour"),
        ({"keep_animation": "yes"}, "keep_animation must be True or False"),
        ({"keep_metadata": 1}, "keep_metadata must be True or False"),
        ({"max_pixels": 10**12}, "max_pixels must be an integer from 1 to 89478485"),
        ({"max_bytes": 0}, "max_bytes must be an integer from 1"),
        ({"max_frames": 0}, "max_frames must be an integer from 1"),
    ],
)
def test_impossible_values_raise_a_clear_profile_error(spec, message):
    with pytest.raises(ProfileError, match=message):
        profile_from_dict("p", spec)


def test_spec_must_be_a_dict():
    with pytest.raises(ProfileError, match="must be a dict of settings, got list"):
        profile_from_dict("p", [("widths", [1])])  # type: ignore[arg-type]


def test_profiles_are_frozen_hashable_values():
    profile = profile_from_dict("p", {"widths": [100]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.widths = (1,)  # type: ignore[misc]
    with pytest.raises(TypeError):
        profile.quality["webp"] = 1  # type: ignore[index]
    assert hash(profile) == hash(profile_from_dict("p", {"widths": [100]}))
    assert profile == pickle.loads(pickle.dumps(profile))
    assert profile_from_dict("p", profile.as_dict()) == profile


def test_fingerprint_changes_with_what_is_rendered_only():
    base = profile_from_dict("a", {})
    assert base.fingerprint == profile_from_dict("b", {}).fingerprint  # the name is a label
    assert base.fingerprint != profile_from_dict("a", {"quality": {"webp": 81}}).fingerprint
    assert base.fingerprint != profile_from_dict("a", {"widths": [320]}).fingerprint
    assert len(base.fingerprint) == 16

"""Auto-quality against the fixed defaults: bytes, SSIMULACRA2 scores, CPU, and colour.

    python bench/quality.py [--target high] [--rounds 1] [--photos DIR] [--limit N]
    python bench/quality.py --oracle [--step 4] [--photos DIR] [--limit N] [--save F | --load F]

Every photo is rendered twice with the default profile's widths and AVIF, WebP and JPEG:
with the fixed qualities (AVIF 60, WebP 80, JPEG 82) and with ``{"target": ...}``.
Runs alternate (fixed first on even photos, auto first on odd ones); CPU is
``time.process_time`` of ``render``, per format the time spent encoding (and, with
auto-quality, searching) that format. Every variant at the profile's widths (not the
extra one at a narrower source's own width, often the source's own file) is scored
with SSIMULACRA2 (``pipeline.imaging.perceptual``, which the unit tests check against
the ``ssimulacra2`` package) against the source resized the same way (the engine's own
decode and resize chain) without encoding, both in sRGB (a tagged output is converted
with its profile).

With pillow-jxl-plugin installed, JPEG XL is rendered at the same target and its bytes
are compared with AVIF's. Last, a Display P3 image made here (saturated reds and greens
outside sRGB) is rendered with the default profile: AVIF and WebP must keep its profile,
and the JPEG fallback's mean CIEDE2000 against a colour-managed conversion of the source
must stay under 2. The last line is JSON.

``--oracle`` renders nothing with a target: it sweeps every output's encoder quality and
bounds what any per-output quality chooser could save while keeping each format's
10th-percentile score (``bench/quality_oracle.py``).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image, ImageCms

from bench import photos as photo_sets
from bench import quality_oracle
from pipeline.imaging import Profile, autoquality, profile_from_dict, render, renderer
from pipeline.imaging.detect import open_image
from pipeline.imaging.geometry import crop_box, plan
from pipeline.imaging.perceptual import Reference
from pipeline.imaging.profiles import jxl_available
from pipeline.imaging.transform import decode, resize, to_srgb

FORMATS = ("avif", "webp", "jpeg")
P3_SOURCE = Path(__file__).resolve().parent.parent / "demo" / "photos"
P3_SOURCE = P3_SOURCE / "02_iphone_5mp_orient6_p3.jpg"
_SRGB = ImageCms.createProfile("sRGB")

# CPU per format: time inside the renderer's per-output encode (search included).
_encode_cpu: dict[str, float] = defaultdict(float)
_encode = renderer._Encoder.encode


def _timed_encode(self, images, fmt, size):
    start = time.process_time()
    try:
        return _encode(self, images, fmt, size)
    finally:
        _encode_cpu[fmt] += time.process_time() - start


renderer._Encoder.encode = _timed_encode  # type: ignore[method-assign]


def profiles(target: str | float, formats: tuple[str, ...] = FORMATS) -> tuple[Profile, Profile]:
    fixed = profile_from_dict("fixed", {"formats": list(formats)})
    auto = profile_from_dict("auto", {"formats": list(formats), "quality": {"target": target}})
    return fixed, auto


def references(data: bytes, profile: Profile) -> dict[str, Image.Image]:
    """name -> the pixels the engine encodes for that output, before encoding, in sRGB."""
    im, source = open_image(data, profile)
    box = crop_box((source.width, source.height), profile.aspect, profile.focal_point)
    layout = plan(box, profile.widths, profile.max_original)
    images, decoded = decode(im, source, layout.box, layout.steps[0].size, animate=False)
    out = {}
    for step in layout.steps:
        images = [resize(i, step.size) for i in images]
        shown = to_srgb(images[0], decoded.icc) if decoded.wide and decoded.icc else images[0]
        for name in step.names:
            out[name] = shown.convert("RGB")
    return out


def shown(blob: bytes) -> Image.Image:
    """An output as a colour-managed browser shows it, in sRGB."""
    with Image.open(io.BytesIO(blob)) as im:
        icc = im.info.get("icc_profile")
        rgb = im.convert("RGB")
    if icc:
        rgb = ImageCms.profileToProfile(rgb, io.BytesIO(icc), _SRGB, outputMode="RGB")
    return rgb


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) if values else float("nan")


def render_timed(data: bytes, profile: Profile) -> tuple[float, dict[str, float], object]:
    _encode_cpu.clear()
    start = time.process_time()
    rendering = render(data, profile)
    return time.process_time() - start, dict(_encode_cpu), rendering


def p3_image() -> bytes:
    """A Display P3 JPEG of saturated red and green ramps outside sRGB, on soft noise."""
    with Image.open(P3_SOURCE) as im:
        p3 = im.info["icc_profile"]
    width, height = 640, 480
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    red = np.array([1.0, 0.05, 0.05])
    green = np.array([0.05, 1.0, 0.1])
    # Top half: red ramping to green left to right; bottom half: green to red, darker.
    top = (red * (1 - x) + green * x) * (0.75 + 0.25 * y * 2)
    bottom = (green * (1 - x) + red * x) * (1.2 - 0.5 * y)
    pixels = np.where(y < 0.5, top, bottom)
    noise = np.random.default_rng(14).normal(0, 2.0, (height, width, 3))
    rgb = np.clip(pixels * 255 + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, "JPEG", quality=95, icc_profile=p3)
    return buffer.getvalue()


def colour_check() -> tuple[bool, float, dict[str, bool]]:
    """Whether AVIF/WebP keep the P3 profile, and the JPEG fallback's mean CIEDE2000."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    data = p3_image()
    rendering = render(data, profile_from_dict("p3", {}))
    with Image.open(io.BytesIO(data)) as im:
        p3 = im.info["icc_profile"]
        source = ImageCms.profileToProfile(im, io.BytesIO(p3), _SRGB, outputMode="RGB")
    kept = {}
    for fmt in ("avif", "webp"):
        outs = rendering.variants(fmt)
        kept[fmt] = bool(outs) and all(
            Image.open(io.BytesIO(o.data)).info.get("icc_profile") == p3 for o in outs
        )
    errors = []
    for out in rendering.variants("jpeg"):
        with Image.open(io.BytesIO(out.data)) as im:
            assert "icc_profile" not in im.info  # untagged: sRGB
            got = np.asarray(im.convert("RGB"), dtype=np.float64) / 255
        expected = source.resize((out.width, out.height), Image.Resampling.LANCZOS)
        want = np.asarray(expected, dtype=np.float64) / 255
        errors.append(float(deltaE_ciede2000(rgb2lab(want), rgb2lab(got)).mean()))
    return all(kept.values()), max(errors), kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="high", help="a level name or a score")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--photos", type=Path, default=None, help=photo_sets.HELP)
    parser.add_argument("--limit", type=int, default=None, help="the first N photos only")
    parser.add_argument(
        "--oracle", action="store_true", help="sweep qualities: bounds of any chooser"
    )
    parser.add_argument("--step", type=int, default=4, help="--oracle: quality sweep step")
    parser.add_argument("--save", type=Path, default=None, help="--oracle: write the sweep")
    parser.add_argument("--load", type=Path, default=None, help="--oracle: re-read a sweep")
    args = parser.parse_args()
    target: str | float = args.target
    if target not in autoquality.LEVELS:
        target = float(target)
    if args.photos is None:
        args.photos = photo_sets.default_photos()
    print(f"photo set: {photo_sets.describe(args.photos)}", flush=True)
    paths = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    photos = {p.name: p.read_bytes() for p in paths[: args.limit]}
    fixed, auto = profiles(target)
    if args.oracle:
        print(
            json.dumps(
                quality_oracle.run(
                    photos, fixed, args.step, references, shown, save=args.save, load=args.load
                )
            )
        )
        return
    modes = {"fixed": fixed, "auto": auto}

    cpu: dict[str, list[float]] = {m: [] for m in modes}
    cpu_fmt: dict[str, dict[str, float]] = {m: defaultdict(float) for m in modes}
    renderings: dict[str, dict[str, object]] = {m: {} for m in modes}
    for index, (name, data) in enumerate(photos.items()):
        order = list(modes) if index % 2 == 0 else list(modes)[::-1]
        for mode in order:
            times = []
            for _ in range(args.rounds):
                seconds, per_fmt, rendering = render_timed(data, modes[mode])
                times.append(seconds)
            cpu[mode].append(statistics.median(times))
            for fmt, seconds in per_fmt.items():
                cpu_fmt[mode][fmt] += seconds
            renderings[mode][name] = rendering
        print(f"  rendered {name}", flush=True)

    jxl = jxl_available()
    jxl_renderings = {}
    if jxl:
        _, jxl_auto = profiles(target, ("jxl",))
        for name, data in photos.items():
            jxl_renderings[name] = render(data, jxl_auto)

    # Scores of every width variant, full size, against the engine's unencoded pixels.
    scores: dict[str, dict[str, list[float]]] = {m: defaultdict(list) for m in modes}
    sizes: dict[str, dict[str, int]] = {m: defaultdict(int) for m in modes}
    proxy_error: list[float] = []
    whole_error: list[float] = []
    jxl_bytes = jxl_avif_bytes = 0
    jxl_scores: list[float] = []
    widths = {f"w{w}" for w in fixed.widths}
    for name, data in photos.items():
        refs = references(data, fixed)
        cache: dict[tuple[int, int], Reference] = {}
        for mode in modes:
            # The profile's widths only: a variant at a narrower source's own width is
            # often the source's own file, the same in both modes (a score of 100).
            outputs = [o for o in renderings[mode][name].outputs if o.name in widths]
            if mode == "auto" and jxl:
                outputs += [o for o in jxl_renderings[name].outputs if o.name in widths]
            for out in outputs:
                ref = refs[out.name]
                reference = cache.setdefault(ref.size, Reference(ref))
                score = reference.score(shown(out.data))
                if out.format == "jxl":
                    jxl_scores.append(score)
                    jxl_bytes += out.size
                    continue
                scores[mode][out.format].append(score)
                sizes[mode][out.format] += out.size
                if mode == "auto" and out.score is not None:
                    whole = out.width * out.height <= autoquality.WHOLE_PIXELS
                    (whole_error if whole else proxy_error).append(score - out.score)
                if mode == "auto" and out.format == "avif" and jxl:
                    jxl_avif_bytes += out.size
        print(f"  scored {name}", flush=True)

    p3_kept, delta_e, kept = colour_check()

    count = len(photos)
    level = f"{target!r} (SSIMULACRA2 >= {auto.auto.score:g})" if auto.auto else str(target)
    print()
    print(f"photos: {count}; variants at {', '.join(map(str, fixed.widths))} px; target {level}")
    print("scores: SSIMULACRA2 of every width variant against the unencoded resize")
    print()
    header = ["format", "mode", "bytes", "vs fixed", "p10", "median", "p90", "p90-p10", "CPU s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for fmt in FORMATS:
        for mode in modes:
            s = scores[mode][fmt]
            row = [
                fmt,
                mode,
                f"{sizes[mode][fmt]:,}",
                f"{sizes[mode][fmt] / sizes['fixed'][fmt]:.3f}",
                f"{percentile(s, 10):.1f}",
                f"{percentile(s, 50):.1f}",
                f"{percentile(s, 90):.1f}",
                f"{percentile(s, 90) - percentile(s, 10):.1f}",
                f"{cpu_fmt[mode][fmt]:.2f}",
            ]
            print("| " + " | ".join(row) + " |")
    total = {m: sum(sizes[m].values()) for m in modes}
    for mode in modes:
        all_scores = [v for fmt in FORMATS for v in scores[mode][fmt]]
        row = [
            "**all**",
            mode,
            f"{total[mode]:,}",
            f"{total[mode] / total['fixed']:.3f}",
            f"{percentile(all_scores, 10):.1f}",
            f"{percentile(all_scores, 50):.1f}",
            f"{percentile(all_scores, 90):.1f}",
            f"{percentile(all_scores, 90) - percentile(all_scores, 10):.1f}",
            f"{sum(cpu[mode]):.2f} (render)",
        ]
        print("| " + " | ".join(row) + " |")
    print()
    if jxl:
        print(
            f"JPEG XL at the same target: {jxl_bytes:,} bytes, {jxl_bytes / jxl_avif_bytes:.3f}x "
            f"AVIF's {jxl_avif_bytes:,} (median score {percentile(jxl_scores, 50):.1f}, "
            f"p10 {percentile(jxl_scores, 10):.1f})"
        )
    else:
        print("JPEG XL: skipped (pillow-jxl-plugin is not installed)")
    for label, errors in (("mosaic", proxy_error), ("whole", whole_error)):
        if errors:
            print(
                f"full-size score minus the search's score, {label} probes "
                f"({len(errors)} outputs): mean {statistics.fmean(errors):+.2f}, "
                f"p10 {percentile(errors, 10):+.2f}, p90 {percentile(errors, 90):+.2f}"
            )
    print(
        f"Display P3 test image: profile kept in {', '.join(f for f, k in kept.items() if k)}; "
        f"JPEG fallback mean CIEDE2000 vs a colour-managed conversion: {delta_e:.2f}"
    )

    p10_delta = min(
        percentile(scores["auto"][f], 10) - percentile(scores["fixed"][f], 10) for f in FORMATS
    )
    spread = {
        m: {f: percentile(scores[m][f], 90) - percentile(scores[m][f], 10) for f in FORMATS}
        for m in modes
    }
    summary = {
        "target": target,
        "bytes_vs_fixed": round(total["auto"] / total["fixed"], 3),
        "p10_delta": round(p10_delta, 2),
        "spread_ratio": round(max(spread["auto"][f] / spread["fixed"][f] for f in FORMATS), 3),
        "cpu_vs_fixed": round(sum(cpu["auto"]) / sum(cpu["fixed"]), 2),
        "p3_kept": p3_kept,
        "srgb_delta_e": round(delta_e, 2),
        "jxl_vs_avif": round(jxl_bytes / jxl_avif_bytes, 3) if jxl else None,
    }
    met = {
        "bytes_vs_fixed <= 0.75": summary["bytes_vs_fixed"] <= 0.75,
        "p10_delta >= 0 (every format)": summary["p10_delta"] >= 0,
        "spread_ratio <= 0.5 (every format)": summary["spread_ratio"] <= 0.5,
        "cpu_vs_fixed <= 2": summary["cpu_vs_fixed"] <= 2,
        "p3_kept": p3_kept,
        "srgb_delta_e < 2": delta_e < 2,
    }
    print("targets: " + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in met.items()))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

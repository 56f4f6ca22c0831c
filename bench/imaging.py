"""Benchmark the imaging engine against the naive Pillow recipe and pyvips, in one process.

    python bench/imaging.py [--rounds 3] [--photos DIR]

The photos are ``--photos``, else the team's larger corpus (``../shared/corpus/photos``
beside the checkout) when it is there, else the ones shipped in ``demo/photos``; the
output says which set was used.

All three approaches do the same job on every photo: an optimized original (JPEG, long
edge capped at 2560) and WebP variants at 1600/1024/640/320 px wide (never upscaled; a photo
narrower than one of them also gets a variant at its own width, as the engine makes one),
upright, in sRGB, without metadata, at the same quality settings:

* naive:  the recipe popular in blog posts: for each output, re-open the original,
          ``exif_transpose``, ``thumbnail(LANCZOS)``, WebP ``method=6``, JPEG ``optimize``.
* pyvips: libvips used well: one ``thumbnail_buffer`` (shrink-on-load) to the largest
          output, each smaller one derived from the previous, the same encoder settings as
          ours, one libvips thread (workers run one process per core).
* ours:   ``pipeline.imaging.render`` with the default profile restricted to these outputs.

Runs are interleaved (photo by photo, the order rotating each round) so that machine noise
hits all three alike; the CPU time of a photo is its median over the rounds. Quality is
SSIM (scikit-image, on luma) of every output against a reference: a full decode resized
straight to the output's size with Lanczos, no encoding. Peak RSS is measured in a fresh
subprocess per approach on the largest photo. The last line is JSON for CI.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("VIPS_CONCURRENCY", "1")  # before pyvips loads libvips
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, ImageCms, ImageOps

from bench import photos as photo_sets
from pipeline.imaging import Profile, profile_from_dict, render

#: Ours may lose at most this much mean SSIM against naive (SSIM is 0..1; 0.005 is below
#: what people notice at these qualities).
QUALITY_TOLERANCE = 0.005

Outputs = dict[str, tuple[str, tuple[int, int], bytes]]  # name -> (format, size, data)


def bench_profile() -> Profile:
    """The default profile, restricted to the outputs the baselines produce."""
    return profile_from_dict("bench", {"formats": ["webp"]})


def _targets(width: int, height: int, profile: Profile) -> list[tuple[str, tuple[int, int]]]:
    """(name, bounding box) for each output a baseline must produce, never upscaling."""
    cap = profile.max_original
    targets = [("original", (cap, cap))]
    if any(w > width for w in profile.widths) and width not in profile.widths:
        targets.append((f"w{width}", (width, 10**6)))  # as ours: a variant at its own width
    targets += [(f"w{w}", (w, 10**6)) for w in sorted(profile.widths, reverse=True) if w <= width]
    return targets


# -- naive -----------------------------------------------------------------------------


_SRGB = ImageCms.createProfile("sRGB")


def naive(data: bytes, profile: Profile) -> Outputs:
    out: Outputs = {}
    for name, box in _targets(*_oriented_size(data), profile):
        im = Image.open(io.BytesIO(data))
        im = ImageOps.exif_transpose(im)
        im.thumbnail(box, Image.Resampling.LANCZOS)
        icc = im.info.get("icc_profile")
        if icc:
            im = ImageCms.profileToProfile(im, io.BytesIO(icc), _SRGB, outputMode="RGB")
        im = im.convert("RGB")
        buffer = io.BytesIO()
        if name == "original":
            im.save(buffer, "JPEG", quality=profile.quality["jpeg"], optimize=True)
            out[name] = ("jpeg", im.size, buffer.getvalue())
        else:
            im.save(buffer, "WEBP", quality=profile.quality["webp"], method=6)
            out[name] = ("webp", im.size, buffer.getvalue())
    return out


def _oriented_size(data: bytes) -> tuple[int, int]:
    im = Image.open(io.BytesIO(data))
    orientation = im.getexif().get(0x0112, 1)
    return (im.height, im.width) if orientation in (5, 6, 7, 8) else im.size


# -- pyvips ----------------------------------------------------------------------------


def vips(data: bytes, profile: Profile) -> Outputs:
    """libvips at its best: one shrink-on-load decode, each variant from the previous one.

    (Measured here: this is 1.5x faster than one ``thumbnail_buffer`` per output.)
    """
    import pyvips

    header = pyvips.Image.new_from_buffer(data, "")
    orientation = header.get("orientation") if header.get_typeof("orientation") else 1
    width = header.height if orientation in (5, 6, 7, 8) else header.width
    out: Outputs = {}
    im = None
    for name, (w, h) in _targets(width, header.height, profile):
        if im is None:
            im = pyvips.Image.thumbnail_buffer(
                data, w, height=h, size="down", export_profile="srgb"
            ).copy_memory()
        else:
            im = im.thumbnail_image(w, height=h, size="down").copy_memory()
        if name == "original":
            blob = im.jpegsave_buffer(
                Q=profile.quality["jpeg"], optimize_coding=True, interlace=True, keep="none"
            )
            out[name] = ("jpeg", (im.width, im.height), blob)
        else:
            blob = im.webpsave_buffer(
                Q=profile.quality["webp"], effort=profile.effort["webp"], keep="none"
            )
            out[name] = ("webp", (im.width, im.height), blob)
    return out


# -- ours ------------------------------------------------------------------------------


def ours(data: bytes, profile: Profile) -> Outputs:
    rendering = render(data, profile)
    return {o.name: (o.format, (o.width, o.height), o.data) for o in rendering.outputs}


APPROACHES: dict[str, Callable[[bytes, Profile], Outputs]] = {
    "naive": naive,
    "pyvips": vips,
    "ours": ours,
}


# -- measuring -------------------------------------------------------------------------


def cpu_seconds(
    fn: Callable[[bytes, Profile], Outputs], data: bytes, profile: Profile
) -> tuple[float, Outputs]:
    start = time.process_time()
    out = fn(data, profile)
    return time.process_time() - start, out


def reference(data: bytes) -> Image.Image:
    """Full decode, upright, sRGB: what every output is compared with."""
    im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    icc = im.info.get("icc_profile")
    if icc:
        im = ImageCms.profileToProfile(im, io.BytesIO(icc), _SRGB, outputMode="RGB")
    return im.convert("RGB")


def ssim_of(ref: Image.Image, blob: bytes) -> float:
    import numpy as np
    from skimage.metrics import structural_similarity

    out = Image.open(io.BytesIO(blob)).convert("L")
    expected = ref.resize(out.size, Image.Resampling.LANCZOS).convert("L")
    return float(structural_similarity(np.asarray(expected), np.asarray(out), data_range=255))


def peak_rss(approach: str, path: Path) -> float:
    """Peak RSS (MiB) of a fresh interpreter rendering ``path`` once with ``approach``."""
    result = subprocess.run(
        [sys.executable, __file__, "--rss-child", approach, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def rss_child(approach: str, path: str) -> None:
    data = Path(path).read_bytes()
    if approach != "idle":
        APPROACHES[approach](data, bench_profile())
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec from the parent.
    status = Path("/proc/self/status").read_text()
    peak_kib = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")
    )
    print(peak_kib / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--photos", type=Path, default=None, help=photo_sets.HELP)
    parser.add_argument(
        "--rss-child", nargs=2, metavar=("APPROACH", "PATH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return

    if args.photos is None:
        args.photos = photo_sets.default_photos()
    print(f"photo set: {photo_sets.describe(args.photos)}", flush=True)
    profile = bench_profile()
    paths = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    photos = {p.name: p.read_bytes() for p in paths}
    names = list(APPROACHES)
    times: dict[str, dict[str, list[float]]] = {n: defaultdict(list) for n in names}
    outputs: dict[str, dict[str, Outputs]] = {n: {} for n in names}

    for round_ in range(args.rounds):
        for index, (photo, data) in enumerate(photos.items()):
            shift = (round_ + index) % len(names)
            for approach in names[shift:] + names[:shift]:
                seconds, out = cpu_seconds(APPROACHES[approach], data, profile)
                times[approach][photo].append(seconds)
                outputs[approach].setdefault(photo, out)

    cpu = {n: sum(statistics.median(t) for t in times[n].values()) for n in names}
    total_bytes = {
        n: sum(len(o[2]) for out in outputs[n].values() for o in out.values()) for n in names
    }
    for n in names[1:]:
        assert all(outputs[n][p].keys() == outputs["naive"][p].keys() for p in photos), n

    ssim: dict[str, dict[str, list[float]]] = {n: defaultdict(list) for n in names}
    per_photo: dict[str, dict[str, float]] = {n: {} for n in names}
    for photo, data in photos.items():
        ref = reference(data)
        for n in names:
            scores = [ssim_of(ref, blob) for _fmt, _size, blob in outputs[n][photo].values()]
            per_photo[n][photo] = statistics.fmean(scores)
            for name, score in zip(outputs[n][photo], scores, strict=True):
                ssim[n][name].append(score)
    variants = ["original"] + [f"w{w}" for w in sorted(profile.widths, reverse=True)]
    mean_ssim = {n: statistics.fmean(v for vs in ssim[n].values() for v in vs) for n in names}
    worst = {
        n: min(photos, key=lambda p, n=n: per_photo[n][p] - per_photo["naive"][p])
        for n in names[1:]
    }

    largest = max(paths, key=lambda p: Image.open(p).width * Image.open(p).height)
    rss = {n: peak_rss(n, largest) for n in ["idle", *names]}

    count = len(photos)
    print(f"photos: {count} from {args.photos} ({sum(map(len, photos.values())) / 1e6:.1f} MB)")
    print(f"rounds: {args.rounds}, interleaved; CPU time = median per photo, summed")
    print(
        f"profile: original JPEG q{profile.quality['jpeg']} + WebP q{profile.quality['webp']} "
        f"at {', '.join(map(str, sorted(profile.widths, reverse=True)))} px"
    )
    print()
    header = [
        "approach",
        "CPU s/image",
        "speed-up",
        "output bytes",
        "bytes vs naive",
        "mean SSIM",
        *(f"SSIM {v}" for v in variants),
        "peak RSS MiB",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for n in names:
        row = [
            n,
            f"{cpu[n] / count:.3f}",
            f"{cpu['naive'] / cpu[n]:.2f}x",
            f"{total_bytes[n]:,}",
            f"{total_bytes[n] / total_bytes['naive']:.3f}",
            f"{mean_ssim[n]:.4f}",
            *(f"{statistics.fmean(ssim[n][v]):.4f}" if ssim[n][v] else "-" for v in variants),
            f"{rss[n]:.0f}",
        ]
        print("| " + " | ".join(row) + " |")
    print()
    print(f"peak RSS on {largest.name}: Python + imports alone {rss['idle']:.0f} MiB")
    for n, photo in worst.items():
        gap = per_photo[n][photo] - per_photo["naive"][photo]
        print(f"largest SSIM loss against naive, {n}: {gap:+.4f} on {photo}")
    print(f"quality threshold: ours' mean SSIM >= naive's - {QUALITY_TOLERANCE}")
    summary = {
        "vs_naive": round(cpu["naive"] / cpu["ours"], 2),
        "vs_pyvips": round(cpu["pyvips"] / cpu["ours"], 2),
        "bytes_vs_naive": round(total_bytes["ours"] / total_bytes["naive"], 3),
        "quality_delta": round(mean_ssim["ours"] - mean_ssim["naive"], 4),
        "peak_rss_mib": round(rss["ours"], 1),
    }
    met = {
        "vs_naive >= 3": summary["vs_naive"] >= 3,
        "vs_pyvips >= 1.1": summary["vs_pyvips"] >= 1.1,
        "bytes_vs_naive <= 1.05": summary["bytes_vs_naive"] <= 1.05,
        f"quality_delta >= -{QUALITY_TOLERANCE}": summary["quality_delta"] >= -QUALITY_TOLERANCE,
        "peak_rss_mib < 100": summary["peak_rss_mib"] < 100,
    }
    print("targets: " + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in met.items()))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

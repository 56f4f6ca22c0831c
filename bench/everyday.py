"""Everyday web sources: graphics, icons, animations, small lossy photos, HEIC.

    python bench/everyday.py [--photos DIR] [--save DIR]

Renders every file of ``bench/everyday_sources.py`` (made in code, so every run is the
same) with the default profile and prints, per file and in total: the source's bytes,
the optimized original's format and bytes, the bytes of all outputs, the naive recipe's
bytes (``bench/imaging.py``: JPEG original and WebP variants, each re-opened from the
source) next to ours for the same outputs ("same set"), and the SSIM (luma,
scikit-image) of the optimized original against the source, both shown on white.

Targets (the last line is JSON): every original at most 1.00x its source; no graphic
output is JPEG; every image has WebP and AVIF outputs; SSIM at least 0.99 for graphics
and 0.97 for photographs.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, ImageCms, ImageOps

from bench import photos as photo_sets
from bench.everyday_sources import everyday_sources
from bench.imaging import naive
from pipeline.imaging import Profile, render

MIN_SSIM = {"graphic": 0.99, "photo": 0.97}

# The naive recipe converts palette images with transparency to RGB, as blog posts do.
warnings.filterwarnings("ignore", "Palette images with Transparency", UserWarning)


def on_white(data: bytes) -> Image.Image:
    """The first frame, upright, in sRGB, composited on white (what a page shows), as luma."""
    im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    icc = im.info.get("icc_profile")
    rgba = im.convert("RGBA")
    if icc:
        srgb = ImageCms.createProfile("sRGB")
        rgba = ImageCms.profileToProfile(rgba, io.BytesIO(icc), srgb, outputMode="RGBA")
    white = Image.new("RGBA", rgba.size, "white")
    return Image.alpha_composite(white, rgba).convert("L")


def ssim(source: bytes, output: bytes) -> float:
    import numpy as np
    from skimage.metrics import structural_similarity

    a, b = on_white(source), on_white(output)
    if a.size != b.size:
        a = a.resize(b.size, Image.Resampling.LANCZOS)
    if min(a.size) < 7:
        return 1.0 if a.tobytes() == b.tobytes() else 0.0
    return float(structural_similarity(np.asarray(a), np.asarray(b), data_range=255))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, default=None, help=photo_sets.HELP)
    parser.add_argument("--save", type=Path, help="also write the sources into this folder")
    args = parser.parse_args()
    folder = args.photos or photo_sets.default_photos()
    print(f"photos for the lossy crops: {photo_sets.describe(folder)}")
    sources = everyday_sources(folder)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for name, data in sources.items():
            (args.save / name).write_bytes(data)

    profile = Profile()
    header = (f"{'file':34} {'kind':7} {'source':>8} {'original':>14} {'ratio':>6} "
              f"{'all outputs':>11} {'same set':>8} {'naive':>8} {'ssim':>6}  formats")  # fmt: skip
    print(header)
    print("-" * len(header))
    totals = {"source": 0, "original": 0, "outputs": 0, "same": 0, "naive": 0}
    worst_ratio, jpeg_graphics, missing, low_ssim, cpu = 0.0, [], [], [], 0.0
    for name, data in sources.items():
        start = time.process_time()
        rendering = render(data, profile)
        cpu += time.process_time() - start
        original = rendering.original
        formats = sorted({o.format for o in rendering.outputs})
        naive_outputs = naive(data, profile)
        naive_bytes = sum(len(blob) for _fmt, _size, blob in naive_outputs.values())
        # Ours for the outputs the naive recipe makes (original, WebP at the profile's widths).
        same_set = sum(
            o.size
            for o in rendering.outputs
            if o.name in naive_outputs and (o.name == "original" or o.format == "webp")
        )
        score = ssim(data, original.data)
        kind = rendering.content
        ratio = original.size / len(data)
        worst_ratio = max(worst_ratio, ratio)
        if kind == "graphic" and "jpeg" in formats:
            jpeg_graphics.append(name)
        if not {"webp", "avif"} <= set(formats):
            missing.append(name)
        if score < MIN_SSIM[kind]:
            low_ssim.append(name)
        outputs = sum(o.size for o in rendering.outputs)
        row = {"source": len(data), "original": original.size, "outputs": outputs,
               "same": same_set, "naive": naive_bytes}  # fmt: skip
        for key, value in row.items():
            totals[key] += value
        print(f"{name:34} {kind:7} {len(data):8} {original.format:>5} {original.size:8} "
              f"{ratio:5.2f}x {outputs:11} {same_set:8} {naive_bytes:8} {score:6.3f}  "
              f"{','.join(formats)}")  # fmt: skip
    total_ratio = totals["original"] / totals["source"]
    print("-" * len(header))
    print(f"{'total (' + str(len(sources)) + ' files)':34} {'':7} {totals['source']:8} "
          f"{'':>5} {totals['original']:8} {total_ratio:5.2f}x {totals['outputs']:11} "
          f"{totals['same']:8} {totals['naive']:8}")  # fmt: skip
    print(f"render CPU: {cpu:.2f} s in all")
    targets = {
        "every original <= 1.00x its source": worst_ratio <= 1.0,
        "no graphic output is JPEG": not jpeg_graphics,
        "every image has WebP and AVIF": not missing,
        "SSIM >= 0.99 graphics, >= 0.97 photos": not low_ssim,
    }
    for target, met in targets.items():
        print(f"{'met ' if met else 'MISSED'}  {target}")
    for label, names in (("JPEG graphics", jpeg_graphics), ("missing formats", missing),
                         ("low SSIM", low_ssim)):  # fmt: skip
        if names:
            print(f"{label}: {', '.join(names)}")
    print(json.dumps({
        "files": len(sources),
        "originals_vs_sources": round(total_ratio, 3),
        "worst_original_vs_source": round(worst_ratio, 3),
        "graphics_as_jpeg": len(jpeg_graphics),
        "missing_webp_or_avif": len(missing),
        "below_ssim_floor": len(low_ssim),
        "render_cpu_s": round(cpu, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()

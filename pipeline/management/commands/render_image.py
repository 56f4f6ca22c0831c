"""Render image files with a profile into a folder, to see what the pipeline would make.

python manage.py render_image photo.jpg uploads/ --out /tmp/out [--profile product] [--json]

Folders are walked recursively (hidden entries skipped); every file is judged by its
content, so a non-image is reported as rejected with its reason. Outputs land in
``OUT/<file path without extension>/<output name>.<extension>``. The exit status is 1
when any file was rejected.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipeline.errors import ImageRejected
from pipeline.imaging import Profile, Rendering, render
from pipeline.management.cli import profile_named


class Command(BaseCommand):
    help = "Render image files or folders with a pipeline profile into a folder."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
        parser.add_argument("--out", required=True, type=Path, help="folder for the outputs")
        parser.add_argument("--profile", default=None, help="profile name (default: default)")
        parser.add_argument("--json", action="store_true", help="one JSON document on stdout")

    def handle(self, *args: Any, **options: Any) -> None:
        profile = profile_named(options["profile"])
        out_dir: Path = options["out"]
        if out_dir.exists() and not out_dir.is_dir():
            raise CommandError(
                f"--out {out_dir} is a file: give a folder (it is created if missing)"
            )
        files = list(_files(options["paths"]))
        if not files:
            raise CommandError(f"no files found in {', '.join(map(str, options['paths']))}")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CommandError(
                f"--out {out_dir}: cannot create the folder ({e.strerror or e}); give a folder "
                "you can write to"
            ) from e

        report: dict[str, Any] = {"profile": profile.name, "out": str(out_dir), "files": []}
        rejected = 0
        taken: set[Path] = set()
        for path, relative in files:
            folder = _unique(out_dir / relative, taken)
            try:
                entry = _render_one(path, profile, folder)
            except OSError as e:  # writing the outputs, not reading the input
                raise CommandError(
                    f"cannot write the outputs of {path} into {folder} ({e.strerror or e}); "
                    "give an --out folder you can write to"
                ) from e
            report["files"].append(entry)
            if "reason" in entry:
                rejected += 1
                if not options["json"]:
                    self.stderr.write(f"{path}: rejected: {entry['reason']}")
            elif not options["json"]:
                for line in _lines(path, entry):
                    self.stdout.write(line)

        done = [f for f in report["files"] if "reason" not in f]
        source_bytes = sum(f["source"]["size"] for f in done)
        output_bytes = sum(o["bytes"] for f in done for o in f["outputs"])
        report["summary"] = {
            "files": len(files),
            "rendered": len(done),
            "rejected": rejected,
            "outputs": sum(len(f["outputs"]) for f in done),
            "source_bytes": source_bytes,
            "output_bytes": output_bytes,
        }
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self.stdout.write(
                f"{len(done)} of {len(files)} file(s) rendered with profile {profile.name!r} "
                f"into {out_dir}: {report['summary']['outputs']} outputs, {output_bytes:,} bytes "
                f"from {source_bytes:,} bytes of sources"
            )
        if rejected:
            raise CommandError(f"{rejected} of {len(files)} file(s) rejected")


def _files(paths: list[Path]) -> Iterator[tuple[Path, Path]]:
    """(file, output folder relative to OUT) for every file under ``paths``."""
    for path in paths:
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                relative = found.relative_to(path)
                if found.is_file() and not any(p.startswith(".") for p in relative.parts):
                    yield found, Path(path.name) / relative.with_suffix("")
        else:
            yield path, Path(path.stem)


def _unique(folder: Path, taken: set[Path]) -> Path:
    """Two inputs with the same name must not overwrite each other's outputs."""
    candidate, n = folder, 1
    while candidate in taken:
        n += 1
        candidate = folder.with_name(f"{folder.name}-{n}")
    taken.add(candidate)
    return candidate


def _render_one(path: Path, profile: Profile, folder: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as e:
        return {"path": str(path), "reason": f"unreadable: {e.strerror or e}"}
    try:
        rendering = render(data, profile)
    except ImageRejected as e:
        return {"path": str(path), "reason": e.reason}
    folder.mkdir(parents=True, exist_ok=True)
    outputs = []
    for out in rendering.outputs:
        target = folder / f"{out.name}.{out.extension}"
        target.write_bytes(out.data)
        outputs.append(
            {
                "name": out.name,
                "format": out.format,
                "width": out.width,
                "height": out.height,
                "frames": out.frames,
                "bytes": out.size,
                "saving": round(1 - out.size / len(data), 4),
                "sha256": out.sha256,
                "quality": out.quality,
                "score": out.score,
                "path": str(target),
            }
        )
    return {"path": str(path), **_facts(rendering), "outputs": outputs}


def _facts(rendering: Rendering) -> dict[str, Any]:
    source = rendering.source
    return {
        "source": {
            "format": source.format,
            "width": source.width,
            "height": source.height,
            "size": source.size,
            "sha256": source.sha256,
            "has_alpha": source.has_alpha,
            "frames": source.frames,
            "orientation": source.orientation,
        },
        "skipped": [{"name": s.name, "reason": s.reason} for s in rendering.skipped],
        "placeholder": {"color": rendering.placeholder.color},
    }


def _lines(path: Path, entry: dict[str, Any]) -> Iterator[str]:
    for out in entry["outputs"]:
        size = f"{out['width']}x{out['height']}"
        yield (
            f"{path}  {out['name']:<8} {out['format']:<4} {size:>9}  {out['bytes']:>10,} bytes"
            f"  saves {out['saving']:>6.1%}"
        )
    for skip in entry["skipped"]:
        yield f"{path}  {skip['name']:<8} skipped: {skip['reason']}"

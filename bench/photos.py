"""The photos the benchmarks run on, and how a run says which set it used.

The team's larger corpus (``../shared/corpus/photos`` beside a checkout) when it is there,
else the photos shipped with the repository (``demo/photos``). Results differ from one
set to the other, so every benchmark prints the set it used.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus" / "photos"
SHIPPED = REPO / "demo" / "photos"


def default_photos() -> Path:
    return CORPUS if CORPUS.is_dir() else SHIPPED


def describe(folder: Path) -> str:
    """``folder``, named as the team corpus or the shipped photos when it is one of them."""
    folder = folder.resolve()
    if folder == CORPUS.resolve():
        return f"the team corpus, {folder}"
    if folder == SHIPPED.resolve():
        return f"the photos shipped in the repository, {folder}"
    return str(folder)


HELP = f"folder of photos (default: {CORPUS} if present, else {SHIPPED})"

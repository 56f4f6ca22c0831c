"""The pure imaging engine: bytes and a profile in, frozen results out.

Pillow and the standard library; numpy only for profiles with a visual-quality target
(``autoquality``, ``perceptual``: the ``quality`` extra). Nothing here imports Django, so
the engine runs and is tested anywhere. Bad input raises
``pipeline.errors.ImageRejected`` (a permanent error with a one-line reason); a bad
profile raises ``pipeline.errors.ProfileError``.

    from pipeline.imaging import profile_from_dict, render
    rendering = render(data, profile_from_dict("product", {"widths": [400, 800]}))
"""

from .detect import probe, sniff
from .profiles import Profile, profile_from_dict
from .renderer import render
from .results import Output, Placeholder, Rendering, Skipped, SourceInfo

__all__ = [
    "Output",
    "Placeholder",
    "Profile",
    "Rendering",
    "Skipped",
    "SourceInfo",
    "probe",
    "profile_from_dict",
    "render",
    "sniff",
]

"""SSIMULACRA2, the perceptual score auto-quality aims at, in numpy alone.

The metric of libjxl's ``tools/ssimulacra2.cc``: both images to linear RGB, then to
XYB (made positive), and at 6 scales (each a 2x2 box average of the previous, in linear
RGB) an SSIM map and two edge maps (ringing, blurring) per channel, averaged in the
1-norm and 4-norm and combined with the reference's 108 weights and final polynomial.
100 is identical; 90 is visually lossless, 70 "high", 50 "medium" (the reference's own
scale). The blur is a Gaussian of sigma 1.5 truncated at 3.33 sigma with the same edge
handling as the ``ssimulacra2`` package on PyPI (BSD), which the unit tests compare with:
the scores agree within 0.05 (float32 here, float64 there).

numpy is needed only when a profile asks for a target quality (the ``quality`` extra);
nothing imports this module otherwise. ``Reference`` keeps the source's pyramid (XYB,
blurred means and variances) so that scoring many encodings of one image computes the
source's side once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

SCALES = 6
_C2 = 0.0009
_SIGMA = 1.5
_RADIUS = int(3.33 * _SIGMA + 0.5)  # scipy's truncation of the package's Gaussian
_KERNEL = np.exp(-0.5 * (np.arange(-_RADIUS, _RADIUS + 1) / _SIGMA) ** 2)
_KERNEL = (_KERNEL / _KERNEL.sum()).astype(np.float32)
_OPSIN = np.array(
    [[0.30, 0.622, 0.078], [0.23, 0.692, 0.078], [0.24342268924547819, 0.20476744424496821,
                                                   0.55180986650955360]],
    dtype=np.float32,
)  # fmt: skip
_BIAS = np.float32(0.0037930732552754493)
_CBRT_BIAS = np.cbrt(_BIAS)
# libjxl's weights, in the order channel (X, Y, B) > scale > norm (1, 4) > map (ssim,
# ringing, blurring).
_WEIGHTS = np.array([
    0.0, 0.0007376606707406586, 0.0, 0.0, 0.0007793481682867309, 0.0, 0.0,
    0.0004371155730107379, 0.0, 1.1041726426657346, 0.00066284834129271,
    0.00015231632783718752, 0.0, 0.0016406437456599754, 0.0, 1.8422455520539298,
    11.441172603757666, 0.0, 0.0007989109436015163, 0.000176816438078653, 0.0,
    1.8787594979546387, 10.94906990605142, 0.0, 0.0007289346991508072, 0.9677937080626833,
    0.0, 0.00014003424285435884, 0.9981766977854967, 0.00031949755934435053,
    0.0004550992113792063, 0.0, 0.0, 0.0013648766163243398, 0.0, 0.0, 0.0, 0.0, 0.0,
    7.466890328078848, 0.0, 17.445833984131262, 0.0006235601634041466, 0.0, 0.0,
    6.683678146179332, 0.00037724407979611296, 1.027889937768264, 225.20515300849274, 0.0,
    0.0, 19.213238186143016, 0.0011401524586618361, 0.001237755635509985,
    176.39317598450694, 0.0, 0.0, 24.43300999870476, 0.28520802612117757,
    0.0004485436923833408, 0.0, 0.0, 0.0, 34.77906344483772, 44.835625328877896, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0008680556573291698, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0005313191874358747, 0.0, 0.00016533814161379112, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0004179171803251336, 0.0017290828234722833, 0.0, 0.0020827005846636437, 0.0, 0.0,
    8.826982764996862, 23.19243343998926, 0.0, 95.1080498811086, 0.9863978034400682,
    0.9834382792465353, 0.0012286405048278493, 171.2667255897307, 0.9807858872435379, 0.0,
    0.0, 0.0, 0.0005130064588990679, 0.0, 0.00010854057858411537,
])  # fmt: skip
# sRGB byte -> linear light, one table lookup per sample.
_v = np.arange(256, dtype=np.float64) / 255.0
_LINEAR = np.where(_v <= 0.04045, _v / 12.92, ((_v + 0.055) / 1.055) ** 2.4).astype(np.float32)
del _v


#: The shortest side that still gives 6 scales; shorter sides are mirrored out to it
#: before scoring (see ``Reference``).
MIN_SIDE = 225


class Reference:
    """The source side of the metric for one image: compare many distortions with it.

    ``image`` is RGB (anything else is converted; alpha is not supported: auto-quality
    scores opaque photographs only).

    ``pad``: the reference walks its weights over the scales it computed, so an image
    with a side under 225 px (5 scales or fewer) is scored with shifted weights and the
    score loses its meaning (a 320x213 JPEG at quality 100 scores 63-83, at 240 px high
    88-94). With ``pad`` (the default) both images are mirrored out to ``MIN_SIDE`` on
    such a side, which keeps the 6 scales and what they mean (an image of 225 px or
    more scores as in the reference); ``pad=False`` is the reference's own behaviour,
    kept for comparing with it.
    """

    def __init__(self, image: Image.Image, *, pad: bool = True) -> None:
        self.size = image.size
        self.pad = pad
        self._scales = []
        for xyb in _pyramid(image, pad):
            mu = _blur(xyb)
            self._scales.append((xyb, mu, _blur(xyb * xyb) - mu * mu))

    def score(self, image: Image.Image) -> float:
        """SSIMULACRA2 of ``image`` (same size) against the reference."""
        if image.size != self.size:
            raise ValueError(f"size {image.size} differs from the reference's {self.size}")
        features = []
        for (ref, mu1, var1), dist in zip(self._scales, _pyramid(image, self.pad), strict=True):
            mu2, var2, cov = np.split(_blur(np.concatenate((dist, dist * dist, ref * dist))), 3)
            var2 -= mu2 * mu2
            cov -= mu1 * mu2
            features.append((_ssim(mu1, mu2, var1, var2, cov), _edges(ref, mu1, dist, mu2)))
        return _combine(features)


def ssimulacra2(reference: Image.Image, distorted: Image.Image, *, pad: bool = True) -> float:
    """SSIMULACRA2 of ``distorted`` against ``reference`` (RGB images of one size)."""
    return Reference(reference, pad=pad).score(distorted)


def _pyramid(image: Image.Image, pad: bool) -> list[np.ndarray]:
    """Positive XYB planes (channel, y, x) at each scale; stops when a side falls under
    8 pixels (as libjxl)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    linear = _LINEAR[np.asarray(rgb)]
    h, w = linear.shape[:2]
    if pad and min(h, w) < MIN_SIDE:
        extra = ((0, max(0, MIN_SIDE - h)), (0, max(0, MIN_SIDE - w)), (0, 0))
        linear = np.pad(linear, extra, mode="symmetric")
    out = []
    for scale in range(SCALES):
        if linear.shape[0] < 8 or linear.shape[1] < 8:
            break
        out.append(_xyb(linear))
        if scale < SCALES - 1:
            linear = _downsample(linear)
    return out


def _xyb(linear: np.ndarray) -> np.ndarray:
    mixed = np.cbrt(np.maximum(linear @ _OPSIN.T + _BIAS, 0)) - _CBRT_BIAS
    mixed = np.moveaxis(mixed, 2, 0)
    out = np.empty_like(mixed, order="C")
    # MakePositiveXYB: X scaled up, B as B - Y, offsets that keep every value positive.
    out[0] = 0.5 * (mixed[0] - mixed[1]) * 14.0 + 0.42
    y = 0.5 * (mixed[0] + mixed[1])
    out[1] = y + 0.01
    out[2] = mixed[2] - y + 0.55
    return out


def _downsample(linear: np.ndarray) -> np.ndarray:
    """2x2 box average; a last odd row or column averages what it has (it is repeated
    once, which averages the same). Four strided adds: a reduce over a reshaped array's
    axes costs a third of a mosaic's score."""
    h, w, _ = linear.shape
    if h % 2 or w % 2:
        linear = np.pad(linear, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    out = linear[0::2, 0::2] + linear[1::2, 0::2]
    out += linear[0::2, 1::2]
    out += linear[1::2, 1::2]
    out *= np.float32(0.25)
    return out


def _blur(planes: np.ndarray) -> np.ndarray:
    """Separable Gaussian: mirrored at the top and bottom edges, zero beyond the sides
    (the package's edge handling; its arrays are transposed, hence the asymmetry). The
    kernel is symmetric: taps at equal distance are added before one multiply."""
    r = _RADIUS
    c, h, w = planes.shape
    padded = np.pad(planes, ((0, 0), (r, r), (0, 0)), mode="symmetric")
    rows = np.zeros((c, h, w + 2 * r), dtype=planes.dtype)
    _taps(lambda k: padded[:, k : k + h], rows[:, :, r : r + w])
    out = np.empty((c, h, w), dtype=planes.dtype)
    _taps(lambda k: rows[:, :, k : k + w], out)
    return out


def _taps(window: Callable[[int], np.ndarray], out: np.ndarray) -> None:
    r = _RADIUS
    np.multiply(window(r), _KERNEL[r], out=out)
    tmp = np.empty_like(out)
    for k in range(r):
        np.add(window(k), window(2 * r - k), out=tmp)
        tmp *= _KERNEL[k]
        out += tmp


def _norms(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and 4-norm of a non-negative map (channel, y, x)."""
    flat = plane.reshape(plane.shape[0], -1)
    squared = flat * flat
    squared *= squared
    return (
        flat.mean(axis=1, dtype=np.float64),
        squared.mean(axis=1, dtype=np.float64) ** 0.25,
    )


def _ssim(
    mu1: np.ndarray, mu2: np.ndarray, var1: np.ndarray, var2: np.ndarray, cov: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    # SSIMULACRA2's SSIM drops the luminance term's denominator (XYB is already perceptual).
    diff = mu1 - mu2
    diff *= diff
    num = 1.0 - diff
    cov *= 2.0
    cov += _C2
    num *= cov
    var2 += var1
    var2 += _C2
    num /= var2
    d = np.subtract(1.0, num, out=num)
    return _norms(np.maximum(d, 0.0, out=d))


def _edges(
    ref: np.ndarray, mu1: np.ndarray, dist: np.ndarray, mu2: np.ndarray
) -> tuple[np.ndarray, ...]:
    num = np.abs(dist - mu2)
    num += 1.0
    den = np.abs(ref - mu1)
    den += 1.0
    num /= den
    num -= 1.0
    artifact = np.maximum(num, 0.0, out=den)
    ringing = _norms(artifact)
    np.negative(num, out=num)
    blurring = _norms(np.maximum(num, 0.0, out=num))
    return (*ringing, *blurring)


def _combine(features: list[tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]]) -> float:
    # As libjxl: the weights are walked over the scales computed, so an image too small
    # for 6 scales shifts them (the package does the same; the tests cover it).
    total = 0.0
    i = 0
    for c in range(3):
        for ssim, edges in features:
            for n in range(2):
                values = (ssim[n][c], edges[n][c], edges[n + 2][c])
                total += sum(w * abs(v) for w, v in zip(_WEIGHTS[i : i + 3], values, strict=True))
                i += 3
    total *= 0.9562382616834844
    total = (
        2.326765642916932 * total
        - 0.020884521182843837 * total**2
        + 6.248496625763138e-05 * total**3
    )
    return float(100.0 - 10.0 * total**0.6276336467831387) if total > 0 else 100.0

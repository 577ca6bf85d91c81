"""The camera model a stream is analysed with: values, where each came from, and checks.

The detector converts counts to photo-electrons, ``(ADU - offset) / gain``, and
its per-spot precision follows from that photon count; so every number the
server reports depends on the camera's offset, gain and read noise. A value the
user did not give is a default, and a default may be plainly wrong for the
data (an 8-bit camera, a camera read with the offset already removed). This
module records, for each of the three, whether it was ``given`` or is the
``default``, and checks a frame against the model: when most of the background
lies below the offset in use, the photon counts are meaningless and a warning
names the field to set. Estimating the camera from the movie itself is not
done yet (issue 10).

Costs: one percentile of one frame per check (a few ms for 512 x 512).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

DEFAULT_OFFSET_ADU = 100.0
DEFAULT_GAIN_ADU_PER_E = 1.0
DEFAULT_READ_NOISE_E = 0.0

BELOW_OFFSET_LIMIT = 0.25
"""Largest fraction of a frame's pixels that may lie below the offset before it is flagged.

Background pixels scatter around ``offset + gain * background``; with shot and
read noise a few fall below the offset, but when a quarter of the frame does,
the offset in use is above the camera's baseline.
"""


@dataclass(frozen=True)
class CameraModel:
    """Offset, gain and read noise in use, and where each came from.

    Attributes
    ----------
    offset_adu : float
        Baseline subtracted from every pixel, ADU.
    gain_adu_per_e : float
        ADU per photo-electron (> 0).
    read_noise_e : float
        Read noise, electrons RMS (>= 0).
    source : dict of str to str
        ``given`` or ``default`` for ``offset_adu``, ``gain_adu_per_e`` and ``read_noise_e``.
    """

    offset_adu: float
    gain_adu_per_e: float
    read_noise_e: float
    source: dict[str, str] = field(default_factory=dict)

    @classmethod
    def resolve(cls, offset_adu: float | None, gain_adu_per_e: float | None,
                read_noise_e: float | None) -> CameraModel:
        """The model from the given values (None: not given, the default is used)."""
        def pick(value: float | None, default: float) -> tuple[float, str]:
            return (default, "default") if value is None else (float(value), "given")

        off, s_off = pick(offset_adu, DEFAULT_OFFSET_ADU)
        gain, s_gain = pick(gain_adu_per_e, DEFAULT_GAIN_ADU_PER_E)
        rn, s_rn = pick(read_noise_e, DEFAULT_READ_NOISE_E)
        return cls(off, gain, rn, {"offset_adu": s_off, "gain_adu_per_e": s_gain,
                                   "read_noise_e": s_rn})

    def to_dict(self) -> dict[str, object]:
        """Values and sources, for session summaries."""
        return {"offset_adu": self.offset_adu, "gain_adu_per_e": self.gain_adu_per_e,
                "read_noise_e": self.read_noise_e, "source": dict(self.source)}


def check_frame(camera: CameraModel, frame: NDArray[np.generic], field_prefix: str = "",
                ) -> list[str]:
    """Warnings about a frame the camera model cannot describe (empty when it can).

    Parameters
    ----------
    camera : CameraModel
        The model in use.
    frame : ndarray, shape (H, W)
        Raw counts, ADU.
    field_prefix : str
        Prefix of the field names in messages (e.g. ``config.detector.``).

    Returns
    -------
    list of str
        One message per problem, naming the field, the value, where it came from
        and what the data show.
    """
    out: list[str] = []
    img = np.asarray(frame)
    below = float(np.mean(img < camera.offset_adu))
    if below > BELOW_OFFSET_LIMIT:
        med = float(np.median(img))
        out.append(
            f"{field_prefix}camera_offset_adu = {camera.offset_adu:g} "
            f"({camera.source.get('offset_adu', 'given')}) is above {below:.0%} of the pixels "
            f"(median {med:g} ADU): photon counts and localization precisions are not "
            f"meaningful; give the camera's offset (livespt stream --camera-offset)")
    if img.dtype == np.uint8 and camera.source.get("offset_adu") == "default":
        out.append(
            f"{field_prefix}camera_offset_adu: 8-bit frames with the default offset "
            f"({camera.offset_adu:g} ADU, a 16-bit camera's): give the camera's offset, gain "
            "and read noise (--camera-offset, --camera-gain, --read-noise)")
    return out

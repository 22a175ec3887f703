"""One sentence per flagged clip, from where its score peaked in time and frequency.

``sentence(...)`` turns a clip's score, its threshold and the peak span that
:func:`slidead.core.score.score_logmels` found into what an operator reads in the ``anomalies``
view: "error peaks at 3.2-4.1 kHz between 4.5 and 4.9 s, 2.3x the threshold".
"""

from __future__ import annotations

import math


def _hz(lo: float, hi: float) -> str:
    if hi < 1000:
        return f"{lo:.0f}-{hi:.0f} Hz"
    return f"{lo / 1000:.1f}-{hi / 1000:.1f} kHz"


def sentence(
    score: float,
    threshold: float | None,
    start_s: float,
    end_s: float,
    freq_lo_hz: float,
    freq_hi_hz: float,
    what: str = "error",
) -> str:
    """``what`` names the quantity: "error" for the reconstruction models, "deviation" for the
    ID classifier, whose score is how far a patch is from its machine's normal sound."""
    band = _hz(freq_lo_hz, freq_hi_hz)
    when = f"at {start_s:.1f} s" if f"{start_s:.1f}" == f"{end_s:.1f}" else f"between {start_s:.1f} and {end_s:.1f} s"
    text = f"{what} peaks at {band} {when}"
    if threshold is not None and threshold > 0 and math.isfinite(score):
        text += f", {score / threshold:.1f}x the threshold"
    return text

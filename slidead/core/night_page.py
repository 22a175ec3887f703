"""The night report as one self-contained HTML page: what a reliability engineer reads.

:func:`render` turns a :class:`NightPage` (values only: counts, sentences, PNG and audio bytes)
into HTML whose images and sound are data URIs, so the file opens from a mail or a disk with
no server and nothing fetched. :func:`audio_excerpt` cuts the few seconds around a clip's score
peak and encodes them small (MP3; WAV when the codec is missing). Images are WebP (spectrograms)
or palette PNG (line plots). Assembling a page from the
results database and the store is :mod:`slidead.jobs.night_report`'s job.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field

import numpy as np

EXCERPT_S = 3.0


@dataclass
class FlaggedClip:
    clip: str  # the file name
    clip_id: str
    model: str  # "slidead-slider-vae v1"
    score: float
    threshold: float | None
    sentence: str
    verdict: str | None = None
    image: bytes | None = None  # log-mel, normal profile, error map
    image_mime: str = "image/webp"
    audio: bytes | None = None
    audio_mime: str = "audio/mpeg"
    excerpt_s: tuple[float, float] | None = None  # where in the clip the excerpt is


@dataclass
class ModelCounts:
    model: str
    scored: int
    flagged: int
    median_score: float | None
    threshold: float | None = None
    provisional: bool = False  # the machine's thresholds rest on training clips only (not yet commissioned)


@dataclass
class Machine:
    machine_type: str
    machine_id: str
    counts: list[ModelCounts] = field(default_factory=list)
    rejected: int = 0
    arrivals: int | None = None  # objects dropped for it tonight (the drops ledger); None: a night before the ledger
    duplicates: int = 0  # of them, bytes already seen (another name, an earlier night, a training clip)
    alarms: list[str] = field(default_factory=list)  # one sentence each
    commissioning: list[str] = field(default_factory=list)  # what the night's commissioning decided, one sentence each
    clips: list[FlaggedClip] = field(default_factory=list)
    not_shown: list[FlaggedClip] = field(default_factory=list)  # flagged, listed without pictures
    trend: bytes | None = None  # PNG: 30 nights of median score and flag rate

    @property
    def name(self) -> str:
        return f"{self.machine_type} id {self.machine_id}"

    @property
    def flagged(self) -> int:
        return sum(c.flagged for c in self.counts)


@dataclass
class NightPage:
    night: str
    store: str
    generated_at: str
    machines: list[Machine] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def audio_excerpt(
    audio: np.ndarray, rate: int, center_s: float, seconds: float = EXCERPT_S
) -> tuple[bytes, str, tuple[float, float]]:
    """``seconds`` of ``audio`` centred on ``center_s`` (shifted to stay inside the clip), with a
    short fade at both ends: (encoded bytes, MIME type, (start_s, end_s))."""
    import soundfile as sf

    x = np.asarray(audio, dtype=np.float32).ravel()
    n = min(len(x), int(round(seconds * rate)))
    start = int(round(center_s * rate)) - n // 2
    start = min(max(start, 0), max(len(x) - n, 0))
    cut = x[start : start + n].copy()
    fade = min(len(cut) // 4, int(0.02 * rate))
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        cut[:fade] *= ramp
        cut[-fade:] *= ramp[::-1]
    peak = float(np.max(np.abs(cut))) if cut.size else 0.0
    if peak > 1.0:
        cut /= peak
    where = (start / rate, (start + len(cut)) / rate)
    buf = io.BytesIO()
    try:
        sf.write(buf, cut, rate, format="MP3", subtype="MPEG_LAYER_III")
        return buf.getvalue(), "audio/mpeg", where
    except Exception:  # noqa: BLE001 - a libsndfile without MPEG: 16-bit WAV, bigger but plays everywhere
        buf = io.BytesIO()
        sf.write(buf, cut, rate, format="WAV", subtype="PCM_16")
        return buf.getvalue(), "audio/wav", where


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _num(v, fmt: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(float(v), fmt)


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:64em;
padding:0 1em;color:#1f272d}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin:1.6em 0 .4em;border-bottom:1px solid #ccd}
h3{font-size:1em;margin:1em 0 .3em}.muted{color:#5f7281}.alarm{color:#b00020;font-weight:600}
table{border-collapse:collapse;margin:.4em 0}td,th{padding:.2em .7em;border-bottom:1px solid #e3e6ea;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.clip{margin:.8em 0 1.4em}
.clip img,.trend img{max-width:100%;height:auto;display:block}.sentence{font-weight:600}
audio{display:block;margin:.3em 0;width:22em;max-width:100%}code{font-size:.9em}
"""


def _overview(page: NightPage) -> str:
    rows = []
    for m in page.machines:
        for i, c in enumerate(m.counts or [ModelCounts("-", 0, 0, None)]):
            rows.append(
                "<tr>"
                + (
                    f'<td rowspan="{max(len(m.counts), 1)}"><a href="#m-{_e(m.machine_type)}-{_e(m.machine_id)}">'
                    f"{_e(m.name)}</a></td>"
                    if i == 0
                    else ""
                )
                + f"<td>{_e(c.model)}</td><td class=n>{c.scored}</td><td class=n>{c.flagged}</td>"
                + f"<td class=n>{_num(c.median_score)}</td>"
                + (
                    f'<td class=n rowspan="{max(len(m.counts), 1)}">{"-" if m.arrivals is None else m.arrivals}</td>'
                    f'<td class=n rowspan="{max(len(m.counts), 1)}">{m.duplicates}</td>'
                    f'<td class=n rowspan="{max(len(m.counts), 1)}">{m.rejected}</td>'
                    f'<td rowspan="{max(len(m.counts), 1)}" class="{"alarm" if m.alarms else "muted"}">'
                    f"{len(m.alarms) or 'none'}</td>"
                    if i == 0
                    else ""
                )
                + "</tr>"
            )
    head = (
        "<tr><th>machine</th><th>model</th><th class=n>scored</th><th class=n>flagged</th>"
        "<th class=n>median score</th><th class=n>arrived</th><th class=n>duplicates</th>"
        "<th class=n>rejected</th><th>alarms</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _clip(c: FlaggedClip) -> str:
    ratio = f", {c.score / c.threshold:.1f}x" if c.threshold and c.threshold > 0 else ""
    out = [
        '<div class="clip">',
        f"<h3>{_e(c.clip)} <span class=muted>(clip {_e(c.clip_id[:10])}, {_e(c.model)}, "
        f"score {_num(c.score)} / threshold {_num(c.threshold)}{ratio})</span></h3>",
        f'<p class="sentence">{_e(c.sentence[:1].upper() + c.sentence[1:])}.</p>',
    ]
    if c.verdict:
        out.append(f"<p>Operator's verdict: <b>{_e(c.verdict)}</b></p>")
    if c.audio:
        where = f" ({c.excerpt_s[0]:.1f}-{c.excerpt_s[1]:.1f} s of the clip, around the peak)" if c.excerpt_s else ""
        out.append(
            f'<audio controls preload="metadata"><source src="{data_uri(c.audio, c.audio_mime)}" '
            f'type="{_e(c.audio_mime)}"></audio><span class=muted>Listen{_e(where)}</span>'
        )
    if c.image:
        out.append(
            f'<img src="{data_uri(c.image, c.image_mime)}" alt="log-mel, normal band profile and error map of '
            f'{_e(c.clip)}">'
        )
    out.append("</div>")
    return "".join(out)


def _machine(m: Machine, night: str) -> str:
    out = [f'<h2 id="m-{_e(m.machine_type)}-{_e(m.machine_id)}">{_e(m.name)}</h2>']
    parts = [
        f"{c.scored} clips scored by {_e(c.model)}, {c.flagged} flagged"
        + (
            " (provisional thresholds: fitted on training clips, not yet on this machine's own nights)"
            if c.provisional
            else ""
        )
        for c in m.counts
    ]
    if m.duplicates:
        parts.append(f"{m.duplicates} duplicate{'s' if m.duplicates != 1 else ''} not scored again")
    if m.rejected:
        parts.append(f"{m.rejected} rejected")
    arrived = f"{m.arrivals} clip{'s' if m.arrivals != 1 else ''} arrived: " if m.arrivals is not None else ""
    out.append(f"<p>{arrived}{'; '.join(parts) or 'no clips scored'}.</p>")
    if m.commissioning:
        out.append("<ul>" + "".join(f"<li>{_e(a)}</li>" for a in m.commissioning) + "</ul>")
    if m.alarms:
        out.append("<ul>" + "".join(f'<li class="alarm">{_e(a)}</li>' for a in m.alarms) + "</ul>")
    else:
        out.append("<p class=muted>No machine alarm active.</p>")
    if m.trend:
        out.append(
            f'<div class="trend"><h3>The 30 nights up to {_e(night)}</h3>'
            f'<img src="{data_uri(m.trend, "image/png")}" alt="median score and flag rate of {_e(m.name)} per night">'
            "</div>"
        )
    if m.clips:
        out.append(f"<h3>Flagged clips ({len(m.clips) + len(m.not_shown)})</h3>")
        out.extend(_clip(c) for c in m.clips)
    if m.not_shown:
        out.append(
            "<p>Also flagged (listed without pictures, to keep the page small):</p><table>"
            + "".join(
                f"<tr><td>{_e(c.clip)}</td><td>{_e(c.model)}</td><td class=n>{_num(c.score)}</td>"
                f"<td>{_e(c.sentence)}</td></tr>"
                for c in m.not_shown
            )
            + "</table>"
        )
    return "".join(out)


def render(page: NightPage) -> str:
    """The page as one HTML document (UTF-8 text); every value is escaped."""
    flagged = sum(m.flagged for m in page.machines)
    alarms = sum(len(m.alarms) for m in page.machines)
    body = [
        f"<h1>Night {_e(page.night)}</h1>",
        f"<p>{len(page.machines)} machine{'s' if len(page.machines) != 1 else ''}, {flagged} clip"
        f"{'s' if flagged != 1 else ''} flagged, "
        + (
            f'<span class="alarm">{alarms} machine alarm{"s" if alarms != 1 else ""}</span>'
            if alarms
            else "no machine alarm"
        )
        + f". Models: {_e(', '.join(page.models) or 'none')}.</p>",
        _overview(page) if page.machines else "<p>No clips were scored this night.</p>",
    ]
    body += [f"<p class=muted>{_e(n)}</p>" for n in page.notes]
    body += [_machine(m, page.night) for m in page.machines]
    body.append(f"<p class=muted>Store {_e(page.store)}; written {_e(page.generated_at)} by slidead.</p>")
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>slidead night {_e(page.night)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )

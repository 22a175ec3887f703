"""The night report for people: one self-contained HTML page per night, kept in the store.

:func:`write_night_report` reads the night from the results database (counts, alarms, flagged
clips and their sentences, 30 nights of trend), fetches each flagged clip's WAV from the object
store, draws its log-mel beside its machine's normal level per band and its error map (from the
model version that flagged it, loaded from MLflow), cuts a few seconds of sound around the score
peak, and writes ``reports/night-<D>.html`` (:func:`report_key`) through the object store: a
local folder or S3. Rendering is :mod:`slidead.core.night_page`'s; this module gathers.

Size: at most ``max_clips`` flagged clips per machine get pictures and sound (the worst first);
the others are listed in a table. Images are WebP (spectrograms) and palette PNG (trends), sound a 3 s MP3 excerpt per clip.
"""

from __future__ import annotations

import datetime as dt
import logging
import math

import numpy as np

from slidead.core import night_page as page
from slidead.core.audio import decode
from slidead.core.errormap import error_map
from slidead.core.features import log_mel, mel_band_edges
from slidead.core.score import score_logmels
from slidead.layout import check_night
from slidead.store.features import partition
from slidead.store.registry_read import list_versions
from slidead.store.services import Services

log = logging.getLogger(__name__)

MAX_CLIPS = 6  # per machine, with pictures and sound
NORMAL_CLIPS = 32  # training clips per machine that set its normal level per band
TREND_NIGHTS = 30


def report_key(night: str) -> str:
    return f"reports/night-{check_night(night)}.html"


def _key_of(store, uri: str) -> str | None:
    """The store key of a clip's recorded URI (what ``store.uri_for(key)`` gave), or None."""
    base = store.uri_for("x")[:-1]
    return uri[len(base) :] if uri and uri.startswith(base) else None


def _model_labels(svc: Services, models: set[str]) -> dict[str, str]:
    """Each ``<name> v<N>`` with the official DCASE score its evaluation set gave when its clips
    carried domains (the registry's ``official_score`` tag), else as it is. The tags are read
    once per report through the registry reader (its tables on a sqlite registry, one MLflow
    client otherwise), one listing per machine type."""
    tags: dict[str, dict] = {}
    try:
        for prefix in sorted({m.rpartition(" v")[0].rpartition("-")[0] + "-" for m in models}):
            tags.update((f"{v.name} v{v.version}", v.tags) for v in list_versions(svc.tracking_uri, prefix))
    except Exception:  # noqa: BLE001 - no registry: the plain names
        pass
    out = {}
    for model in models:
        try:
            out[model] = f"{model} (DCASE score {float(tags[model]['official_score']):.3f})"
        except (KeyError, TypeError, ValueError):  # no tag: the plain name
            out[model] = model
    return out


def _machines(svc: Services, night: str) -> dict[tuple[str, str], page.Machine]:
    cols, rows = svc.db.query(
        "SELECT machine_type, machine_id, model_name || ' v' || model_version AS model, count(*) AS scored, "
        "count(*) FILTER (WHERE is_anomaly) AS flagged, median(score) AS median_score, "
        "any_value(threshold) AS threshold, coalesce(bool_or(provisional), false) AS provisional "
        "FROM scores WHERE night = ?::DATE GROUP BY ALL ORDER BY ALL",
        [night],
    )
    out: dict[tuple[str, str], page.Machine] = {}
    labels = _model_labels(svc, {r[2] for r in rows})
    for mt, mid, model, scored, flagged, median, thr, prov in rows:
        m = out.setdefault((mt, mid), page.Machine(mt, mid))
        m.counts.append(page.ModelCounts(labels[model], int(scored), int(flagged), median, thr, bool(prov)))
    _, rows = svc.db.query(  # what the nightly commissioning decided for a machine tonight
        "SELECT m.machine_type, c.machine_id, c.status, c.new_version, c.reason, c.model_name "
        "FROM commissioning c JOIN (SELECT DISTINCT model_name, machine_type FROM scores) m USING (model_name) "
        "WHERE c.night = ?::DATE ORDER BY ALL",
        [night],
    )
    for mt, mid, status, new_version, reason, name in rows:
        text = (
            f"commissioned tonight: {name} v{new_version} carries thresholds fitted on its own nights ({reason})"
            if status == "commissioned"
            else f"not commissioned automatically, waiting for a person: {reason}"
        )
        out.setdefault((mt, mid), page.Machine(mt, mid)).commissioning.append(text)
    _, rows = svc.db.query(
        "SELECT machine_type, machine_id, count(*) FROM rejected WHERE night = ?::DATE "
        "AND machine_type IS NOT NULL AND machine_id IS NOT NULL GROUP BY ALL",
        [night],
    )
    for mt, mid, n in rows:
        out.setdefault((mt, mid), page.Machine(mt, mid)).rejected = int(n)
    _, rows = svc.db.query(  # what the drops ledger says arrived, and which of it was a duplicate
        "SELECT machine_type, machine_id, count(*), count(*) FILTER (WHERE fate = 'duplicate') FROM drops "
        "WHERE night = ?::DATE AND machine_type IS NOT NULL AND machine_id IS NOT NULL GROUP BY ALL",
        [night],
    )
    for mt, mid, n, dup in rows:
        m = out.setdefault((mt, mid), page.Machine(mt, mid))
        m.arrivals, m.duplicates = int(n), int(dup)
    _, rows = svc.db.query(
        "SELECT kind, machine_type, machine_id, night, model_name || ' v' || model_version, detail FROM alarms "
        "WHERE night <= ?::DATE AND (cleared_night IS NULL OR cleared_night > ?::DATE) ORDER BY night DESC, kind",
        [night, night],
    )
    for kind, mt, mid, raised, model, detail in rows:
        since = "tonight" if str(raised) == night else f"since {raised}"
        text = f"{kind} alarm ({model}), {since}" + (f": {detail}" if detail else "")
        out.setdefault((mt, mid), page.Machine(mt, mid)).alarms.append(text)
    return dict(sorted(out.items()))


def _trend(svc: Services, night: str, mt: str, mid: str) -> bytes | None:
    from slidead.core import plots

    _, rows = svc.db.query(
        "SELECT night, model_name || ' v' || model_version AS model, median(score), "
        "count(*) FILTER (WHERE is_anomaly) / count(*) FROM scores "
        "WHERE machine_type = ? AND machine_id = ? AND night BETWEEN ?::DATE - INTERVAL 29 DAY AND ?::DATE "
        "GROUP BY ALL ORDER BY night",
        [mt, mid, night, night],
    )
    if not rows:
        return None
    nights = sorted({r[0] for r in rows})
    series: dict[str, dict[str, list[float]]] = {}
    for n, model, median, rate in rows:
        s = series.setdefault(model, {"median": [math.nan] * len(nights), "flag_rate": [math.nan] * len(nights)})
        i = nights.index(n)
        s["median"][i], s["flag_rate"][i] = float(median), float(rate)
    fig = plots.night_trend(nights, series, dt.date.fromisoformat(night))
    return plots.png(fig)


class _Models:
    """Model versions loaded once each, and each machine's normal level per band."""

    def __init__(self, svc: Services):
        self.svc = svc
        self.loaded: dict[tuple[str, int], object] = {}
        self.levels: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray] | None] = {}

    def get(self, name: str, version: int):
        key = (name, int(version))
        if key not in self.loaded:
            try:
                self.loaded[key] = self.svc.tracker.load(name, int(version))
            except Exception as e:  # noqa: BLE001 - the page still shows the clip, without the error map
                log.warning(f"night report: {name} v{version} could not be loaded ({e}); no error maps from it")
                self.loaded[key] = None
        return self.loaded[key]

    def normal_level(self, cfg, machine_type: str, machine_id: str):
        """Mean and sd per mel band of the machine's training clips (from the feature store)."""
        key = (cfg.features.hash, machine_type, machine_id)
        if key not in self.levels:
            self.levels[key] = None
            try:
                fs = self.svc.features
                clips = [c for c in fs.catalog(cfg.features, partition("train"), machine_type)]
                clips = [c for c in clips if c.machine_id == machine_id][:NORMAL_CLIPS]
                units: dict[tuple[str, int], list[int]] = {}
                for c in clips:
                    units.setdefault((c.path, c.row_group), []).append(c.row)
                frames = [
                    r.logmel
                    for (path, rg), rows in units.items()
                    for block in fs.read_unit(cfg.features, path, rg, rows)
                    for r in block
                ]
                if frames:
                    allf = np.concatenate(frames, axis=1)
                    self.levels[key] = (allf.mean(axis=1), allf.std(axis=1))
            except Exception as e:  # noqa: BLE001 - without it the page shows the clip's level alone
                log.warning(f"night report: no normal level for {machine_type} id {machine_id} ({e})")
        return self.levels[key]


def _flagged(svc: Services, night: str) -> list[tuple]:
    _, rows = svc.db.query(
        "SELECT machine_type, machine_id, clip_id, uri, model_name, model_version, score, threshold, explanation, "
        "peak_time_s, verdict FROM anomalies WHERE night = ?::DATE ORDER BY ratio DESC NULLS LAST",
        [night],
    )
    return rows


def _clip(svc: Services, models: _Models, row: tuple, with_media: bool) -> page.FlaggedClip:
    from slidead.core import plots

    mt, mid, clip_id, uri, name, version, score, thr, sentence, peak_s, verdict = row
    clip = page.FlaggedClip(
        clip=(uri or clip_id).rsplit("/", 1)[-1],
        clip_id=clip_id,
        model=f"{name} v{version}",
        score=float(score),
        threshold=None if thr is None else float(thr),
        sentence=sentence or "flagged",
        verdict=verdict,
    )
    if not with_media:
        return clip
    key = _key_of(svc.store, uri)
    try:
        if key is None:
            raise FileNotFoundError(f"{uri} is not in the store {svc.store.uri}")
        decoded = decode(svc.store.get(key), svc.audio)
    except Exception as e:  # noqa: BLE001 - the clip stays listed with its sentence
        log.warning(f"night report: {clip.clip} could not be read ({e}); shown without picture and sound")
        return clip
    rate = svc.audio.target_rate
    clip.audio, clip.audio_mime, clip.excerpt_s = page.audio_excerpt(decoded.audio, rate, float(peak_s or 0.0))
    loaded = models.get(name, version)
    if loaded is None:
        return clip
    cfg = loaded.config
    lm = log_mel(decoded.audio, cfg.features)
    emap = error_map(loaded.model, lm, cfg.features.frames)
    normal = models.normal_level(cfg, mt, mid)
    normal_err = loaded.thresholds.band_error.get(mid)
    # the same span the sentence names: the clip scored again, as the night scored it
    sc = score_logmels(loaded.model, [lm], cfg.features, cfg.score, "cpu", [mid], loaded.thresholds.band_error)
    span = (sc.span_start_s[0], sc.span_end_s[0], sc.span_freq_lo_hz[0], sc.span_freq_hi_hz[0])
    fig = plots.clip_view(
        lm,
        cfg.features.frame_seconds(1),
        emap,
        sc.band_error[0],
        normal_err,
        None if normal is None else normal[0],
        None if normal is None else normal[1],
        mel_band_edges(cfg.features),
        span,
    )
    clip.image, clip.image_mime = plots.picture(fig)
    return clip


def build_night_page(svc: Services, night: str, max_clips: int = MAX_CLIPS) -> page.NightPage:
    """The night's page, gathered from the results database, the store and the registry."""
    check_night(night)
    machines = _machines(svc, night)
    models = _Models(svc)
    for row in _flagged(svc, night):
        m = machines.setdefault((row[0], row[1]), page.Machine(row[0], row[1]))
        shown = len(m.clips) < max_clips
        (m.clips if shown else m.not_shown).append(_clip(svc, models, row, shown))
    for (mt, mid), m in machines.items():
        m.trend = _trend(svc, night, mt, mid)
    names = sorted({c.model for m in machines.values() for c in m.counts})
    notes = []
    if not machines:
        notes.append(f"Nothing was scored on night {night}: run `slidead score --night {night}` first.")
    return page.NightPage(
        night,
        svc.store.uri,
        dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        list(machines.values()),
        names,
        notes,
    )


def write_night_report(svc: Services, night: str, max_clips: int = MAX_CLIPS) -> str:
    """Build, render and store the night's page; returns where it is (a path or an s3:// URI)."""
    html = page.render(build_night_page(svc, night, max_clips))
    key = report_key(night)
    svc.store.put(key, html.encode("utf-8"))
    return svc.store.uri_for(key)

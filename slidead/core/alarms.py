"""Machine-level alarms a plant can act on, from the clip scores of every night.

Two kinds, per machine (type and ID) and registered model:

- ``flagged``: at least ``k`` of the machine's last ``n`` clips (in night and file order, across
  nights) are flagged. Raised once, by the clip that completes the k; the alarm stays open
  (no new one) until a night ends with fewer than ``k`` of the last ``n`` flagged: then it is
  cleared, and a later cluster raises a new one.
- ``drift``: slow wear. Page's one-sided CUSUM on the machine's nightly median score. The
  machine's own first ``warmup_nights`` nights scored by a model version set its reference
  (median and robust spread of their clip scores); every later night contributes
  ``z = (median - reference) / standard error of a median of that night's clip count`` and
  ``S = max(0, S + z - slack)``; the alarm is raised the first night ``S > limit`` and cleared
  the first night ``S`` is back at 0. Each model version has its own reference and statistic,
  so a new champion starts a new warm-up. A median moves long before single clips cross the
  threshold: a defect that grows a little every night shows here first.

Everything is recomputed from the ``scores`` table (the newest model version's score of each
clip for ``flagged``), so re-running a night, or loading a late night, gives the same alarms;
an alarm already raised keeps its ``raised_at``.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

MEDIAN_SE = 1.2533  # the standard error of a median is 1.2533 sigma / sqrt(n) (normal data)
MIN_SE_FRACTION = 0.1  # floor on that standard error, in reference spreads (caps n at ~157)


@dataclass(frozen=True)
class AlarmConfig:
    k: int = 5  # flagged clips ...
    n: int = 10  # ... among a machine's last n raise a 'flagged' alarm
    warmup_nights: int = 3  # nights that set a machine's reference level for drift
    slack: float = 0.5  # CUSUM allowance per night, in standard errors
    limit: float = 5.0  # CUSUM level that raises 'drift'

    def __post_init__(self):
        if not 1 <= self.k <= self.n:
            raise ValueError(f"alarm k={self.k!r} must be in 1..n (n={self.n!r})")
        if self.warmup_nights < 1:
            raise ValueError(f"warmup_nights={self.warmup_nights!r} must be >= 1")
        if self.slack < 0 or self.limit <= 0:
            raise ValueError(f"slack={self.slack!r} must be >= 0 and limit={self.limit!r} > 0")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClipRecord:
    night: str
    machine_type: str
    machine_id: str
    model_name: str
    model_version: int
    clip_id: str
    uri: str
    score: float
    flagged: bool


@dataclass(frozen=True)
class Alarm:
    kind: str  # 'flagged' | 'drift'
    night: str  # the night it was raised
    machine_type: str
    machine_id: str
    model_name: str
    model_version: int
    clip_id: str | None  # flagged: the clip that completed the k of n
    value: float  # flagged clips in the window / the CUSUM statistic
    threshold: float  # k / limit
    detail: str
    cleared_night: str | None = None

    @property
    def alarm_id(self) -> str:
        key = "|".join(
            [
                self.kind,
                self.model_name,
                str(self.model_version) if self.kind == "drift" else "",
                self.machine_type,
                self.machine_id,
                self.night,
            ]
        )
        return hashlib.sha1(key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MachineNight:
    night: str
    machine_type: str
    machine_id: str
    model_name: str
    model_version: int
    n_clips: int
    n_flagged: int
    median_score: float
    reference_median: float | None
    reference_sd: float | None
    drift_z: float | None
    cusum: float | None


@dataclass(frozen=True)
class WindowRow:
    """A clip in a machine's sequence with its k-of-n window: only the clips where something
    can happen need to be given (count >= k, or the last clip of a night)."""

    model_name: str
    machine_type: str
    machine_id: str
    night: str
    clip_id: str
    model_version: int
    count: int  # flagged clips among the last n, this one included
    window: int  # clips in that window (n, or fewer at the start)
    night_end: bool  # the machine's last clip of the night


@dataclass(frozen=True)
class NightStats:
    """One machine's night under one model version."""

    model_name: str
    model_version: int
    machine_type: str
    machine_id: str
    night: str
    n_clips: int
    n_flagged: int
    median_score: float


def windows(records: Sequence[ClipRecord], config: AlarmConfig) -> list[WindowRow]:
    """Each clip's k-of-n window over the newest model version's flags, in machine, night and
    file order (``slidead.store.alarms`` computes the same rows in SQL)."""
    newest: dict[tuple[str, str], ClipRecord] = {}
    for r in records:
        key = (r.model_name, r.clip_id)
        if key not in newest or r.model_version > newest[key].model_version:
            newest[key] = r
    by = defaultdict(list)
    for r in newest.values():
        by[(r.model_name, r.machine_type, r.machine_id)].append(r)
    out = []
    for key in sorted(by):
        clips = sorted(by[key], key=lambda r: (r.night, r.uri, r.clip_id))
        window: deque[bool] = deque(maxlen=config.n)
        for i, r in enumerate(clips):
            window.append(r.flagged)
            out.append(
                WindowRow(
                    r.model_name,
                    r.machine_type,
                    r.machine_id,
                    r.night,
                    r.clip_id,
                    r.model_version,
                    sum(window),
                    len(window),
                    i + 1 == len(clips) or clips[i + 1].night != r.night,
                )
            )
    return out


def night_stats(
    records: Sequence[ClipRecord], warmup_nights: int
) -> tuple[list[NightStats], dict[tuple[str, int, str, str], np.ndarray]]:
    """Per model version, machine and night: clips, flagged, median score; and per model
    version and machine, the clip scores of its first ``warmup_nights`` nights."""
    groups = defaultdict(list)
    for r in records:
        groups[(r.model_name, r.model_version, r.machine_type, r.machine_id, r.night)].append(r)
    stats = [
        NightStats(*key, len(rs), sum(r.flagged for r in rs), float(np.median([r.score for r in rs])))
        for key, rs in sorted(groups.items())
    ]
    warm: dict[tuple[str, int, str, str], list[float]] = defaultdict(list)
    seen: dict[tuple[str, int, str, str], int] = defaultdict(int)
    for key, rs in sorted(groups.items()):
        version_key = key[:4]
        seen[version_key] += 1
        if seen[version_key] <= warmup_nights:
            warm[version_key].extend(r.score for r in rs)
    return stats, {k: np.asarray(v, dtype=np.float64) for k, v in warm.items()}


def flagged_alarms(records: Sequence[ClipRecord], config: AlarmConfig) -> list[Alarm]:
    """``flagged`` alarms from each clip's newest score (see the module docstring)."""
    return flagged_from_windows(windows(records, config), config)


def flagged_from_windows(rows: Sequence[WindowRow], config: AlarmConfig) -> list[Alarm]:
    out: list[Alarm] = []
    open_alarm: Alarm | None = None
    machine = None
    for r in rows:
        if (r.model_name, r.machine_type, r.machine_id) != machine:
            machine, open_alarm = (r.model_name, r.machine_type, r.machine_id), None
        if open_alarm is None and r.count >= config.k:
            open_alarm = Alarm(
                "flagged",
                r.night,
                r.machine_type,
                r.machine_id,
                r.model_name,
                r.model_version,
                r.clip_id,
                float(r.count),
                float(config.k),
                f"{r.count} of the last {r.window} clips of {r.machine_type} id {r.machine_id} "
                f"flagged by {r.model_name} (alarm at {config.k} of {config.n})",
            )
            out.append(open_alarm)
        if open_alarm is not None and r.night_end and r.count < config.k:
            out[out.index(open_alarm)] = _cleared(open_alarm, r.night)
            open_alarm = None
    return out


def _cleared(a: Alarm, night: str) -> Alarm:
    return Alarm(
        a.kind,
        a.night,
        a.machine_type,
        a.machine_id,
        a.model_name,
        a.model_version,
        a.clip_id,
        a.value,
        a.threshold,
        a.detail,
        night,
    )


def drift(records: Sequence[ClipRecord], config: AlarmConfig) -> tuple[list[MachineNight], list[Alarm]]:
    """Per machine, model version and night: the median, the CUSUM, and the ``drift`` alarms."""
    return drift_from_stats(*night_stats(records, config.warmup_nights), config)


def drift_from_stats(
    stats: Sequence[NightStats], warm_scores: dict[tuple[str, int, str, str], np.ndarray], config: AlarmConfig
) -> tuple[list[MachineNight], list[Alarm]]:
    by_version = defaultdict(list)
    for st in stats:
        by_version[(st.model_name, st.model_version, st.machine_type, st.machine_id)].append(st)
    nights_out: list[MachineNight] = []
    alarms: list[Alarm] = []
    for key in sorted(by_version):
        name, version, mtype, mid = key
        order = sorted(by_version[key], key=lambda st: st.night)
        n_warm = min(config.warmup_nights, len(order))
        ref_med = ref_sd = None
        if len(order) > config.warmup_nights:
            ref = warm_scores[key]
            ref_med = float(np.median(ref))
            mad = float(np.median(np.abs(ref - ref_med))) * 1.4826
            ref_sd = max(mad, float(np.std(ref)) * 0.1, 1e-12)
        s, open_alarm = 0.0, None
        for i, st in enumerate(order):
            med = st.median_score
            z = cusum = None
            if ref_med is not None and i >= n_warm:
                se = max(MEDIAN_SE * ref_sd / math.sqrt(st.n_clips), MIN_SE_FRACTION * ref_sd)
                z = (med - ref_med) / se
                s = max(0.0, s + z - config.slack)
                cusum = s
                if open_alarm is None and s > config.limit:
                    open_alarm = Alarm(
                        "drift",
                        st.night,
                        mtype,
                        mid,
                        name,
                        version,
                        None,
                        s,
                        config.limit,
                        f"median score of {mtype} id {mid} has drifted up: {med:.4g} against {ref_med:.4g} over its "
                        f"first {n_warm} nights ({(med - ref_med) / ref_sd:+.1f} spreads); CUSUM {s:.1f} > "
                        f"{config.limit:g} ({name} v{version})",
                    )
                    alarms.append(open_alarm)
                elif open_alarm is not None and s == 0.0:
                    alarms[alarms.index(open_alarm)] = _cleared(open_alarm, st.night)
                    open_alarm = None
            judged = z is not None
            nights_out.append(
                MachineNight(
                    st.night,
                    mtype,
                    mid,
                    name,
                    version,
                    st.n_clips,
                    st.n_flagged,
                    med,
                    ref_med if judged else None,
                    ref_sd if judged else None,
                    z,
                    cusum,
                )
            )
    return nights_out, alarms


def evaluate(records: Sequence[ClipRecord], config: AlarmConfig) -> tuple[list[MachineNight], list[Alarm]]:
    """Both kinds: (machine nights with their drift statistic, every alarm, raised or cleared)."""
    nights, drift_alarms = drift(records, config)
    return nights, flagged_alarms(records, config) + drift_alarms


def onset_probability(p: float, k: int, n: int) -> float:
    """The chance that a given clip of a healthy machine raises a ``flagged`` alarm: its window
    of the last ``n`` clips reaches ``k`` flagged just then. With clips flagged independently at
    rate ``p``, that is the n - 1 clips both windows share holding exactly k - 1 flags, the new
    clip flagged and the one that left the window not: C(n-1, k-1) p^(k-1) (1-p)^(n-k) * p * (1-p)."""
    from math import comb

    if not 1 <= k <= n:
        raise ValueError(f"alarm k={k!r} must be in 1..n (n={n!r})")
    if k == 1 and n == 1:
        return p * (1 - p)
    return comb(n - 1, k - 1) * p ** (k - 1) * (1 - p) ** (n - k) * p * (1 - p)


def clip_rate_for(alarms_per_week: float, clips_per_week: float, k: int, n: int) -> float:
    """The per-clip false-alarm rate at which a healthy machine raises ``alarms_per_week``
    ``flagged`` alarms on average, ``clips_per_week`` clips a week, alarm at ``k`` of ``n``
    (solved by bisection: the onset probability rises with p up to well past any sensible rate)."""
    if alarms_per_week <= 0 or clips_per_week <= 0:
        raise ValueError("alarms_per_week and clips_per_week must be > 0")
    target = alarms_per_week / clips_per_week
    lo, hi = 0.0, (k - 1) / (n - 1) if n > 1 and k > 1 else 0.5  # the onset chance peaks near p = (k-1)/(n-1)
    if onset_probability(hi, k, n) < target:
        raise ValueError(
            f"{alarms_per_week} alarms a week from {clips_per_week:g} clips is more than k={k} of "
            f"n={n} can raise at any clip false-alarm rate"
        )
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if onset_probability(mid, k, n) < target else (lo, mid)
    return (lo + hi) / 2

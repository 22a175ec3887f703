"""Synthetic loads for the results lake's tests and bench (not a test module): what a night
hands the store, without models."""

from __future__ import annotations

import pyarrow as pa

from slidead.store.results import SCORE_COLUMNS


def night_batch(night: str, n: int, shared: str | None = None) -> tuple[pa.Table, list[dict], list[dict]]:
    """A night's shard results, clips and arrivals for ``n`` clips of slider/00; ``shared`` names
    one more clip id whose bytes also arrive on another night."""
    ids = [f"{night}-{i:05d}" for i in range(n)] + ([shared] if shared else [])
    uris = [f"drops/{night}/slider/id_00/{cid}.wav" for cid in ids]
    scores = pa.table(
        {
            "clip_id": ids,
            "model_name": ["slidead-slider-ae"] * len(ids),
            "model_version": pa.array([1] * len(ids), pa.int32()),
            "family": ["ae"] * len(ids),
            "night": [night] * len(ids),
            "machine_type": ["slider"] * len(ids),
            "machine_id": ["00"] * len(ids),
            "score": [float(i % 97) for i in range(len(ids))],
            "threshold": [90.0] * len(ids),
            "is_anomaly": [i % 97 > 90 for i in range(len(ids))],
            "peak_time_s": [1.0] * len(ids),
            "peak_freq_lo_hz": [1000.0] * len(ids),
            "peak_freq_hi_hz": [1100.0] * len(ids),
            "run_id": [f"run-{night}"] * len(ids),
            "explanation": pa.nulls(len(ids), pa.string()),
        }
    ).select(list(SCORE_COLUMNS))
    clips = [
        {"clip_id": c, "uri": u, "night": night, "split": "drop", "machine_type": "slider", "machine_id": "00"}
        for c, u in zip(ids, uris)
    ]
    arrivals = [
        {
            "night": night,
            "uri": u,
            "machine_type": "slider",
            "machine_id": "00",
            "size_bytes": 100,
            "etag": c,
            "clip_id": c,
        }
        for c, u in zip(ids, uris)
    ]
    return scores, clips, arrivals

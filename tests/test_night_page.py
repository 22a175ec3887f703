"""The night report's pure parts: the page from values, and the sound excerpt around a peak."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from slidead.core import night_page as page


def test_excerpt_is_three_seconds_around_the_peak_inside_the_clip():
    rate = 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(10 * rate) / rate)).astype(np.float32)
    for center, where in ((5.0, (3.5, 6.5)), (9.5, (7.0, 10.0)), (0.2, (0.0, 3.0))):
        data, mime, span = page.audio_excerpt(audio, rate, center)
        assert span == where and mime in ("audio/mpeg", "audio/wav")
        back, back_rate = sf.read(io.BytesIO(data))
        assert back_rate == rate and abs(len(back) / rate - 3.0) < 0.1  # MP3 pads a frame at most
        assert len(data) < 40_000


def test_page_escapes_text_and_needs_nothing_outside_it():
    clip = page.FlaggedClip(
        "0001.wav", "ab" * 32, "slidead-slider-vae v1", 12.0, 6.0, "error peaks <b>here</b>", image=b"\x89PNG..."
    )
    clip.audio = b"ID3"
    m = page.Machine("slider", "00", [page.ModelCounts("slidead-slider-vae v1", 10, 1, 4.5)], alarms=["flagged alarm"])
    m.clips.append(clip)
    m.not_shown.append(page.FlaggedClip("0002.wav", "cd" * 32, "slidead-slider-vae v1", 7.0, 6.0, "error peaks"))
    out = page.render(page.NightPage("2026-11-23", "/store", "now", [m], ["slidead-slider-vae v1"]))
    assert "<b>here</b>" not in out and "Error peaks &lt;b&gt;here&lt;/b&gt;." in out
    assert "2.0x" in out and "Flagged clips (2)" in out and "0002.wav" in out and "1 machine alarm" in out
    assert 'src="data:image/webp;base64,' in out and 'src="data:audio/mpeg;base64,' in out
    assert "http" not in out.replace("http-equiv", "") and "<script" not in out


def test_machines_say_what_arrived_and_what_was_a_duplicate():
    counts = [page.ModelCounts("slidead-slider-vae v1", 10, 1, 4.5)]
    m = page.Machine("slider", "00", counts, rejected=2, arrivals=15, duplicates=3)
    out = page.render(page.NightPage("2026-11-23", "/store", "now", [m], ["slidead-slider-vae v1"]))
    assert "<th class=n>arrived</th><th class=n>duplicates</th>" in out
    assert '<td class=n rowspan="1">15</td><td class=n rowspan="1">3</td><td class=n rowspan="1">2</td>' in out
    assert "15 clips arrived: 10 clips scored by slidead-slider-vae v1, 1 flagged; 3 duplicates not scored again" in out
    before = page.Machine("slider", "02", counts)  # a night scored before the ledger existed
    out = page.render(page.NightPage("2026-11-23", "/store", "now", [before], ["slidead-slider-vae v1"]))
    assert '<td class=n rowspan="1">-</td><td class=n rowspan="1">0</td>' in out and "arrived:" not in out

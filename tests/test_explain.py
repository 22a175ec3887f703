"""Tests for slidead.core.explain: the sentence a flagged clip gets."""

from slidead.core.explain import sentence


def test_sentence_in_kilohertz_with_a_time_span_and_ratio():
    assert (
        sentence(2.3, 1.0, 4.5, 4.9, 3210.0, 4140.0)
        == "error peaks at 3.2-4.1 kHz between 4.5 and 4.9 s, 2.3x the threshold"
    )


def test_low_band_in_hertz_single_instant_and_classifier_wording():
    assert (
        sentence(3.0, 2.0, 1.23, 1.25, 120.0, 480.0, what="deviation")
        == "deviation peaks at 120-480 Hz at 1.2 s, 1.5x the threshold"
    )


def test_no_ratio_without_a_usable_threshold():
    assert sentence(3.0, None, 0.0, 1.0, 100.0, 200.0).endswith("between 0.0 and 1.0 s")
    assert "x the threshold" not in sentence(3.0, 0.0, 0.0, 1.0, 100.0, 200.0)

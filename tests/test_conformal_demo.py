"""The demo's summary says how many flagged clips were real faults and how many false alarms (the
synthetic plant knows which clips are faulty), without generating the plant again."""

from __future__ import annotations

import pyarrow as pa

from slidead.settings import Settings
from slidead.shell.demo import DEMO_NIGHT, MACHINE_TYPE, truth_summary
from slidead.store.services import Services
from slidead.synth.plant import PlantSpec, generate_plant, night_truth


def test_night_truth_is_what_generating_the_plant_says():
    spec = PlantSpec(machine_ids=("00",), n_train=0, n_eval_normal=0, n_eval_anomaly=0, night_normal=3, night_anomaly=2)
    made = generate_plant(lambda _k, _b: None, spec)
    assert night_truth(spec) == made["night_truth"] and sum(v != "normal" for v in made["night_truth"].values()) == 2


def test_the_demo_summary_counts_real_faults_and_false_alarms(tmp_path):
    svc = Services.from_settings(Settings(home=tmp_path))
    truth = night_truth(PlantSpec(machine_type=MACHINE_TYPE, nights=(DEMO_NIGHT,)))
    faults = [k for k, v in truth.items() if v != "normal"][:3]
    normals = [k for k, v in truth.items() if v == "normal"][:10]
    flagged = set(faults[:2]) | set(normals[:1])  # two faults caught, one missed, one false alarm
    keys = faults + normals
    svc.db.add_clips(
        [
            {"clip_id": f"c{i}", "uri": f"{svc.store.uri}/{k}", "night": DEMO_NIGHT, "split": "drop"}
            | {"machine_type": MACHINE_TYPE, "machine_id": k.split("id_")[1][:2]}
            for i, k in enumerate(keys)
        ]
    )
    n = len(keys)
    table = pa.table(
        {
            "clip_id": [f"c{i}" for i in range(n)],
            "model_name": ["slidead-slider-vae"] * n,
            "model_version": [1] * n,
            "family": ["vae"] * n,
            "night": [DEMO_NIGHT] * n,
            "machine_type": [MACHINE_TYPE] * n,
            "machine_id": [k.split("id_")[1][:2] for k in keys],
            "score": [1.0] * n,
            "threshold": [0.5] * n,
            "is_anomaly": [k in flagged for k in keys],
            "peak_time_s": [0.0] * n,
            "peak_freq_lo_hz": [0.0] * n,
            "peak_freq_hi_hz": [0.0] * n,
            "run_id": ["r"] * n,
            "explanation": [None] * n,
            "p_value": [0.05] * n,
            "provisional": [True] * n,
        }
    )
    assert svc.db.load_scores([table]) == n
    text = truth_summary(svc, {"slidead-slider-vae": 1})
    assert "of 3 flagged clips, 2 are real faults (of 3 faulty clips in the night) and 1 are false alarms" in text
    assert "1 of 10 normal clips, 10%" in text and "at most 10%" in text


def test_the_demo_says_how_far_one_calibration_may_be_from_its_promise():
    from slidead.shell.demo import calibration_spread

    assert calibration_spread([], 0.1) == ""
    # 10 calibration clips at 10%: the threshold is their maximum; a later clip's rate under one
    # calibration is Beta(1, 10), its 5th and 95th percentiles 0.5% and 25.9%
    text = calibration_spread([40, 10, 12], 0.1)
    assert "on 10 normal clips" in text and "from 1% to 26%" in text
    assert "on 200 normal clips" in calibration_spread([200], 0.1) and "from 7% to 14%" in calibration_spread(
        [200], 0.1
    )

"""The ID classifier scores a night like the other families (it needs each clip's machine ID)."""

from __future__ import annotations

import pytest
from plant import NIGHT, make_plant

from slidead.shell.commands import run_retrain, run_score

pytestmark = pytest.mark.integration


def test_idclf_champion_scores_a_night(tmp_path):
    settings, svc, summary = make_plant(tmp_path, n_train=8, n_eval_normal=3, n_eval_anomaly=3)
    assert run_retrain(settings, "idclf", "slider", epochs=2, use_prefect=False)["promoted"]
    out = run_score(settings, NIGHT, "idclf", use_prefect=False)
    n = len(summary["night_truth"])
    assert out["n_scored"] == n and out["models"] == {"slidead-slider-idclf": 1}
    _, rows = svc.db.query("SELECT family, count(*), count(peak_time_s), count(p_value) FROM scores GROUP BY ALL")
    assert rows == [("idclf", n, n, n)]

"""What people look at, checked in a real headless Chromium: the MLflow UI on a trained store
opens on the training runs of both families, with the datasets they used; the night report's
images decode and its audio players have sound. Without Chromium the browser tests skip, saying
so; the MLflow facts the UI shows are checked without it too."""

from __future__ import annotations

import html
import json
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
from devtools import Chromium

from slidead.jobs.night_report import write_night_report

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def browser() -> str:
    exe = next((p for p in map(shutil.which, BROWSERS) if p), None)
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium): the browser checks did not run")
    return exe


def visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def test_mlflow_says_what_each_run_used_and_why_a_version_is_in_use(trained_store):
    settings, svc, _ = trained_store
    client = svc.tracker.client
    exp = client.get_experiment_by_name("slidead/slider")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["family"] for r in runs) == ["ae", "vae"]
    for r in runs:
        assert r.info.status == "FINISHED"
        # opened before the first epoch: the run lasted at least as long as the training
        assert r.info.end_time - r.info.start_time >= 1000 * r.data.metrics["train_seconds"]
        assert [m.step for m in client.get_metric_history(r.info.run_id, "train_loss")] == [1, 2]
        inputs = {d.tags[0].value: d.dataset for d in r.inputs.dataset_inputs}
        assert set(inputs) == {"training", "evaluation"}
        for context, ds in inputs.items():
            split = "train" if context == "training" else "eval"
            assert (
                f"set%3D{split}/machine_type%3Dslider" in ds.source or f"set={split}/machine_type=slider" in ds.source
            )
            assert re.fullmatch(r"[0-9a-f]{16}", ds.digest)
    digests = {(d.tags[0].value, d.dataset.digest) for r in runs for d in r.inputs.dataset_inputs}
    assert len(digests) == 4  # the families' feature configs differ, so do their sets' digests
    for family in ("ae", "vae"):
        mv = client.get_model_version_by_alias(f"slidead-slider-{family}", "champion")
        assert {"family", "score_metric", "feature_hash", "gate_decision", "false_alarm_rate"} <= set(mv.tags)
        assert mv.tags["family"] == family and mv.tags["score_metric"] == "mse"
        assert mv.tags["gate_decision"] == "promoted"
        assert mv.description.startswith(f"{family} for slider, scored by mse")
        assert "Gate: promoted to champion" in mv.description


def test_a_run_takes_each_epoch_as_it_comes(trained_store):
    from slidead.core.config import RunConfig

    tracker = trained_store[1].tracker
    seen = []
    run_id = tracker.start_training(RunConfig.default("ae", "slider"))
    on_epoch = tracker.epoch_logger(run_id, lambda *a: seen.append(a))
    on_epoch(1, 3, 2.5, 3.5)
    run = tracker.client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.metrics == {"train_loss": 2.5, "val_loss": 3.5}
    assert seen == [(1, 3, 2.5, 3.5)]
    tracker.end_failed(run_id)
    assert tracker.client.get_run(run_id).info.status == "FAILED"
    tracker.client.delete_run(run_id)  # the UI test lists the trained runs only


@pytest.mark.browser
def test_mlflow_ui_opens_on_the_training_runs(browser, mlflow_server, trained_store, tmp_path):
    svc = trained_store[1]
    client = svc.tracker.client
    exp = client.get_experiment_by_name("slidead/slider")
    names = sorted(r.info.run_name for r in client.search_runs([exp.experiment_id]))
    assert [n.split("-")[0] for n in names] == ["ae", "vae"]
    url = mlflow_server + svc.tracker.ui_path("slider")
    # a JS app: the page is read once the runs and their datasets are rendered, or after 90 s
    wanted = json.dumps([*names, "slider-train-"])
    rendered = f"""new Promise(done => {{
      const t0 = Date.now();
      const look = () => {{
        const text = document.body ? document.body.innerText : "";
        if ({wanted}.every(w => text.includes(w)) || Date.now() - t0 > 90000) done(document.documentElement.outerHTML);
        else setTimeout(look, 250);
      }};
      look();
    }})"""
    with Chromium(browser, tmp_path / "profile") as chromium:
        text = visible_text(chromium.evaluate(url, rendered, timeout_s=150))
    assert "Runs - Experiment" in text, text[:500]
    for n in names:  # both families' training runs are listed ...
        assert n in text, f"run {n} not in the rendered runs table: {text[:800]}"
    assert "slider-train-" in text and "training" in text and "evaluation" in text  # ... with their datasets
    assert "Token Usage" not in text  # not the GenAI overview


CHECK = """(async () => {
  const r = {images: document.images.length, decoded: 0, audio: 0, playable: 0, errors: []};
  for (const im of document.images) {
    try { await im.decode(); if (im.naturalWidth > 0 && im.naturalHeight > 0) r.decoded++; }
    catch (e) { r.errors.push("img: " + e); }
  }
  const players = [...document.querySelectorAll("audio")];
  r.audio = players.length;
  await Promise.all(players.map((a, i) => new Promise(done => {
    const src = a.querySelector("source");
    if (!src || !src.src.startsWith("data:audio/")) { r.errors.push("audio without a data source"); return done(); }
    let settled = false;
    const settle = (ok, why) => {
      if (settled) return;
      settled = true;
      if (ok && a.duration > 0) r.playable++; else if (why) r.errors.push(`audio ${i}: ${why}`);
      done();
    };
    a.addEventListener("loadedmetadata", () => settle(true));
    a.addEventListener("error", () => settle(false, "error " + src.type), true);
    setTimeout(() => settle(false, `no metadata after 60 s (readyState ${a.readyState}, networkState ${a.networkState})`), 60000);
    a.load();
  })));
  return r;
})()"""


@pytest.mark.browser
def test_night_report_images_decode_and_audio_plays(browser, trained_store, tmp_path):
    settings, svc, nights = trained_store
    night = nights[-1]
    t0 = time.perf_counter()
    where = Path(write_night_report(svc, night))
    seconds = time.perf_counter() - t0
    page = where.read_text()
    assert where.parent.name == "reports" and where.name == f"night-{night}.html"
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page), "the page must need nothing outside it"
    _, rows = svc.db.query(
        "SELECT machine_id, explanation FROM anomalies WHERE night = ?::DATE ORDER BY ratio DESC", [night]
    )
    assert rows, "the fixture night should have flagged clips"
    for mid, sentence in rows[:6]:
        assert html.escape(sentence[:1].upper() + sentence[1:]) in page
    for mid in ("00", "02"):
        assert f"slider id {mid}</h2>" in page
    assert page.count("The 30 nights up to") == 2
    _, arrived = svc.db.query(
        "SELECT machine_id, count(*) FROM drops WHERE night = ?::DATE GROUP BY ALL ORDER BY 1", [night]
    )
    assert [mid for mid, _ in arrived] == ["00", "02"]
    for mid, n in arrived:  # each machine's section starts with what the ledger says arrived
        assert re.search(rf"slider id {mid}</h2><p>{n} clips arrived: ", page), mid
    assert len(page) < 2_000_000, f"{len(page)} bytes, written in {seconds:.1f} s"

    # the check runs in the page as it is (which carries no script of its own), awaited in real
    # time: virtual time had run out before the media pipeline read the clips on a loaded machine
    with Chromium(browser, tmp_path / "profile") as chromium:
        r = chromium.evaluate(where.as_uri(), CHECK, timeout_s=150)
    assert r["errors"] == []
    shown = sum(min(n, 6) for n in Counter(mid for mid, _ in rows).values())  # pictures for the worst 6 a machine
    assert r["images"] == 2 + shown and r["decoded"] == r["images"]  # two trends and one per shown clip
    assert r["audio"] == shown and r["playable"] == r["audio"]

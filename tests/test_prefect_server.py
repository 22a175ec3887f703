"""One test through a real `prefect server`: `slidead serve` in the background, then
`prefect deployment run retrain/vae --watch` and `prefect deployment run score/nightly --watch`
through the real `prefect` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from plant import NIGHT, make_plant
from s3server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def _wait_http(url: str, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_deployments_run_through_a_real_prefect_server(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "SLIDEAD_HOME": str(tmp_path / "home"),
    }
    # what runs through the server is asserted (both deployments complete, the VAE is champion, the
    # night is scored), not what the model learns: a plant of 8 training clips per ID is enough
    settings, svc, summary = make_plant(tmp_path / "home", n_train=8, n_eval_normal=3, n_eval_anomaly=3)
    logs = tmp_path / "logs"
    logs.mkdir()
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=open(logs / "server.log", "w"),
        stderr=subprocess.STDOUT,
    )
    serve = None
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/health", server, 120)
        serve = subprocess.Popen(
            [str(BIN / "slidead"), "serve"],
            env=env,
            cwd=REPO,
            stdout=open(logs / "serve.log", "w"),
            stderr=subprocess.STDOUT,
        )

        def run(*args: str) -> subprocess.CompletedProcess:
            deadline = time.monotonic() + 60
            while True:  # the deployments appear once `slidead serve` has registered them
                out = subprocess.run(
                    [str(BIN / "prefect"), "deployment", "run", *args, "--watch", "--watch-timeout", "400"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=450,
                )
                if (
                    out.returncode == 0
                    or "not found" not in (out.stdout + out.stderr).lower()
                    or time.monotonic() > deadline
                ):
                    return out
                time.sleep(2)

        def served_log() -> str:  # the flow runs' own lines and tracebacks are in the runner's log
            return "\n--- slidead serve, last lines ---\n" + "\n".join(
                (logs / "serve.log").read_text(errors="replace").splitlines()[-60:]
            )

        trained = run("retrain/vae", "-p", "epochs=3")
        assert trained.returncode == 0 and "Completed" in trained.stdout, trained.stdout + served_log()
        scored = run("score/nightly", "-p", f"night={NIGHT}")
        assert scored.returncode == 0 and "Completed" in scored.stdout, scored.stdout + served_log()
    finally:
        if serve is not None:
            _stop(serve)
        _stop(server)
    champion = svc.tracker.champion_version("slidead-slider-vae")
    assert champion is not None and int(champion.version) == 1
    with svc.db.connect(read_only=True) as con:
        n = con.execute(
            "SELECT count(*) FROM scores WHERE night = ?::DATE AND model_name = 'slidead-slider-vae'", [NIGHT]
        ).fetchone()[0]
    assert n == len(summary["night_truth"])

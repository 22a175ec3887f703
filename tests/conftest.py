"""Shared fixtures: WAV bytes made with soundfile, the real MIMII sample clips, one torch thread,
and the shared trained plants.

Plants and training are the suite's cost, so a module that tests something other than training
itself should use a shared plant instead of generating and training its own:

- ``trained_store`` (session): a small plant (8 training clips per ID) with the AE and the VAE
  trained 2 epochs and two nights scored by the VAE. Read-only by convention: for tests that
  look at what a trained store shows (MLflow UI, night report).
- ``behaviour_plant`` (session): the plant of the behaviour tests (``plant.BEHAVIOUR_SPEC``:
  clear faults, 24 training clips per ID) as a :class:`plant.TrainedPlant`:
  ``behaviour_plant.retrain("ae", 40)`` trains the AE the first time any module asks and
  returns the same summary after, so the AUC floors of every family share one training each.

Stores keep absolute paths (MLflow artifact locations, clip URIs), so a shared plant cannot be
copied to give a module a private one: a test that writes to a shared plant writes what other
modules may see, and must assert only on what it wrote (its own night, its own version).

Torch: tiny models train and score on one intra-op thread (``one_torch_thread``, or
``torch.set_num_threads(1)`` around a module fixture's training): more threads only spin, and on
a busy 2-core machine wait. Markers: ``slow`` for a test of more than a few seconds,
``integration`` for one that starts real services; ``make test-fast`` leaves both out.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

MIMII_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "mimii"

# --- two workers (pytest-xdist: ``make test`` runs ``-n 2 --dist loadfile``) -------------------
# Under xdist every worker has its own session fixtures, and a module's fixtures are set up on
# each worker its tests reach. So a module is one unit of work, sent whole to one worker, and the
# modules that use one of these session fixtures (named in their source) form one unit with the
# others using it: the fixture is built once, on that worker. Fixtures of the same unit share a name.
SHARED_SESSION_FIXTURES = {
    "behaviour_plant": "behaviour_plant",
    "trained_store": "trained_store",
    "mlflow_server": "trained_store",  # built on trained_store
}

# The units that take longest, longest first (`pytest --durations=0`, summed per unit): they start
# first, so that no worker is left running a long one after the other has finished. The rest keep
# the order of collection after them.
LONGEST_FIRST = (
    "test_wear.py",
    "behaviour_plant",
    "test_prefect_server.py",
    "test_pipeline.py",
    "test_commission.py",
    "test_dask.py",
    "test_gpu_check.py",
    "test_dcase_cli.py",
    "test_user_path.py",
    "test_families.py",
    "trained_store",
    "test_idclf_night.py",
    "test_s3.py",
    "test_cli_errors.py",
)
_UNITS: dict[str, str] = {}


def unit_of(path: str) -> str:
    """The unit of work of the test module at ``path`` (a node id's path is enough): its file
    name, or the name of the shared session fixture its source uses."""
    if path not in _UNITS:
        p = Path(path) if Path(path).is_absolute() else Path(__file__).resolve().parents[1] / path
        try:
            text = p.read_text()
        except OSError:
            text = ""
        used = [unit for name, unit in SHARED_SESSION_FIXTURES.items() if re.search(rf"\b{name}\b", text)]
        _UNITS[path] = min(used) if used else p.name
    return _UNITS[path]


def pytest_collection_modifyitems(config, items):
    order = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    # a stable sort: the tests of a unit keep their order, and every worker collects the same list
    items.sort(key=lambda item: order.get(unit_of(str(item.path)), len(order)))


try:
    from xdist.scheduler import LoadFileScheduling
except ImportError:  # pytest-xdist is in the dev extra; without it the suite runs in one process
    LoadFileScheduling = None
else:

    class UnitScheduling(LoadFileScheduling):
        """loadfile, with the modules that share a session fixture sent to one worker together."""

        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid.split("::", 1)[0])

    def pytest_xdist_make_scheduler(config, log):
        if config.getvalue("dist") == "loadfile":
            return UnitScheduling(config, log)
        return None


if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: each runs torch (and the commands it starts) on one thread, as
    # ``one_torch_thread`` does for one test: more threads would only wait for the other worker
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def wav_bytes(audio: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    """``audio`` (samples,) or (samples, channels) written as a WAV file in memory."""
    buf = io.BytesIO()
    sf.write(buf, audio, rate, subtype=subtype, format="WAV")
    return buf.getvalue()


def sine(freq: float, seconds: float, rate: int = 16000, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def make_wav():
    return wav_bytes


@pytest.fixture
def make_sine():
    return sine


@pytest.fixture(scope="session")
def mimii_dir() -> Path:
    """The folder holding ``slider/id_<NN>/{normal,abnormal}/00000000.wav``; skips if absent."""
    if not (MIMII_SAMPLES / "slider").is_dir():
        pytest.skip(f"real MIMII sample clips not found at {MIMII_SAMPLES}")
    return MIMII_SAMPLES


@pytest.fixture
def one_torch_thread():
    """Run torch on one intra-op thread for the test. Tiny models gain nothing from more, and on a
    busy 2-core machine OpenMP's spinning threads make them 30x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory):
    """A small plant with both families trained (2 epochs) and two nights scored by the VAE,
    shared by the tests that only look at what a trained store shows (MLflow UI, night report).
    Returns (settings, services, nights)."""
    import torch
    from plant import make_plant

    from slidead.shell.commands import run_retrain, run_score

    nights = ("2026-11-22", "2026-11-23")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        settings, svc, _ = make_plant(
            tmp_path_factory.mktemp("trained"), n_train=8, n_eval_normal=4, n_eval_anomaly=4, nights=nights
        )
        for family in ("ae", "vae"):
            run_retrain(settings, family, "slider", epochs=2, use_prefect=False, thresholds="validation")
        for night in nights:
            run_score(settings, night, "vae", use_prefect=False)
    finally:
        torch.set_num_threads(n)
    return settings, svc, nights


@pytest.fixture(scope="session")
def behaviour_plant(tmp_path_factory):
    """The behaviour tests' plant, its families trained on first request (see the module docstring)."""
    from plant import BEHAVIOUR_SPEC, TrainedPlant

    return TrainedPlant(tmp_path_factory.mktemp("behaviour"), **BEHAVIOUR_SPEC)


@pytest.fixture(scope="session")
def mlflow_server(trained_store):
    """``mlflow server`` (sqlite backend, 127.0.0.1, a free port) on ``trained_store``; its address."""
    import subprocess
    import sys
    import time
    import urllib.request

    from s3server import free_port

    settings = trained_store[0]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            settings.tracking_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the uvicorn worker it starts stops with it
        # MLflow 3's server starts a job runner and about eight consumer processes that poll for
        # GenAI jobs, together most of a core for as long as it runs; slidead has none for them
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.5)
        yield base
    finally:
        import signal

        for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(server.pid, sig)
                server.wait(wait_s)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue

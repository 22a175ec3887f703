"""``make gpu-check``: the GPU path proven by one command, in at most ~8 minutes on one GPU.

Steps, each timed, on a synthetic plant made here (``slidead.synth``: 3 slider machine IDs):

1. the seed's VAE training: ``slidead train --family vae --epochs 100`` on 2,370 generated
   normal clips (790 per ID), early stopping off, on the device (target: under 2 minutes);
2. a 2,000-clip night of new clips through ``slidead score --device cuda`` in a fresh process,
   features and model on the GPU (target: 2,000 clips/s), and the same night with ``--device
   cpu`` in the same run (the ratio);
3. the largest batch of VAE windows one forward pass takes on the device (doubling until it
   runs out of memory) and its windows/s;
4. the ``gpu`` tests (``pytest -m gpu``: CPU and GPU scores agree, fp32 and bf16); on a GPU a
   skipped one counts as failed. They run first: the quickest answer to whether the GPU path
   is right at all.

It prints one table and appends it, with the date and the device, to
``tests/bench/RESULTS.md`` (``--results``). Without CUDA it stops at once with one sentence
and exit status 2. ``--device cpu --dry`` runs every step small on the CPU (what the test
suite does, so that this script is not first run on a GPU); ``--dry`` alone keeps the device.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BIN = Path(sys.executable).parent
NIGHT = "2026-11-23"
IDS = ("00", "02", "04")
# The CLI as users run it: the installed script, else ``python -m slidead`` (an environment where
# the package is importable but was never installed, as on a machine lent for this check alone).
SLIDEAD = [str(BIN / "slidead")] if (BIN / "slidead").exists() else [sys.executable, "-m", "slidead"]


@dataclass
class Sizes:
    train_per_id: int  # normal training clips per machine ID
    night: int  # clips of the scored night
    epochs: int
    max_batch: int  # the batch search stops here (2**k windows)


FULL = Sizes(train_per_id=790, night=2000, epochs=100, max_batch=1 << 26)
DRY = Sizes(train_per_id=4, night=24, epochs=1, max_batch=1 << 12)


@dataclass
class Row:
    what: str
    value: str
    target: str = ""
    met: str = ""  # "yes" / "no" / "" (no target)


def no_cuda_sentence() -> str | None:
    """The one sentence ``make gpu-check`` stops with when torch sees no CUDA device, else None."""
    import torch

    if torch.cuda.is_available():
        return None
    why = "this torch build has no CUDA" if torch.version.cuda is None else f"torch {torch.__version__} sees no GPU"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        why += f" (CUDA_VISIBLE_DEVICES={visible!r})"
    return f"make gpu-check needs a CUDA GPU and {why}; nothing was run (GPU_ARGS='--device cpu --dry' runs it small on the CPU)."


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        return f"{p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, torch {torch.__version__}"
    return f"CPU, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}"


def _env(home: Path, device: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SLIDEAD_"))}
    env.update(SLIDEAD_HOME=str(home), SLIDEAD_DEVICE=device, SLIDEAD_FAMILY="vae", DO_NOT_TRACK="1")
    return env


def _run(cmd: list[str], env: dict, timeout: float) -> tuple[float, str]:
    """Run a command to its end: (wall seconds, its stdout); a failure raises with its last lines."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        tail = (p.stdout + p.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(cmd[:3])} exited with {p.returncode}: " + " | ".join(tail))
    return secs, p.stdout


def make_plant(home: Path, sizes: Sizes) -> float:
    """Training clips (and a few evaluation clips) under ``home``'s store, and the night's clips."""
    from concurrent.futures import ProcessPoolExecutor

    sys.path.insert(0, str(HERE))
    from run import _night_spec, _plant_part

    t0 = time.perf_counter()
    train = {mid: dict(n_train=sizes.train_per_id, n_eval_normal=4, n_eval_anomaly=4, nights=(), seed=0) for mid in IDS}
    night = _night_spec(sizes.night, IDS)
    parts = [dict(kw, machine_ids=(mid,)) for mid, kw in train.items()]
    parts += [dict(kw, machine_ids=(mid,)) for mid, kw in night.items()]
    store = str(home / "store")
    if sizes == DRY:  # a few dozen clips: here, without starting processes
        for part in parts:
            _plant_part(store, part)
        return time.perf_counter() - t0
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that may hold a CUDA context
    with ProcessPoolExecutor(min(len(parts), os.cpu_count() or 1), mp_context=spawn) as pool:
        list(pool.map(_plant_part, [store] * len(parts), parts))
    return time.perf_counter() - t0


def step_train(home: Path, device: str, sizes: Sizes) -> list[Row]:
    n = sizes.train_per_id * len(IDS)
    cmd = [*SLIDEAD, "train", "--family", "vae", "--epochs", str(sizes.epochs)]
    cmd += ["--patience", str(sizes.epochs), "--device", device, "--no-prefect"]
    secs, _ = _run(cmd, _env(home, device), timeout=1800)
    target = 120.0
    return [
        Row(
            f"seed's VAE training, {sizes.epochs} epochs on {n:,} clips (`slidead train`, all of it)",
            f"{secs:.1f} s",
            f"< {target:.0f} s" if sizes == FULL else "",
            ("yes" if secs < target else "no") if sizes == FULL else "",
        )
    ]


def _fresh_night(home: Path, into: Path) -> Path:
    """A new SLIDEAD_HOME whose store holds the night (hard links) and whose registry and champion
    cache are ``home``'s: a night of clips this store has never scored."""
    src = home / "store" / "drops" / NIGHT
    for f in src.rglob("*.wav"):
        t = into / "store" / "drops" / NIGHT / f.relative_to(src)
        t.parent.mkdir(parents=True, exist_ok=True)
        os.link(f, t)
    if (home / "cache").is_dir():
        shutil.copytree(home / "cache", into / "cache")
    return into


def step_night(home: Path, work: Path, device: str, sizes: Sizes) -> list[Row]:
    from slidead.jobs.champions import load_champion
    from slidead.settings import Settings
    from slidead.store.services import Services

    settings = Settings(home=home)
    load_champion(Services.from_settings(settings), "slidead-slider-vae")  # the cache a second night finds
    rows = []
    devices = [device] if device == "cpu" else [device, "cpu"]
    rates = {}
    for dev in devices:
        night_home = _fresh_night(home, work / f"night-{dev}")
        env = _env(night_home, dev)
        env["SLIDEAD_MLFLOW_URI"] = settings.tracking_uri
        cmd = [*SLIDEAD, "score", "--night", NIGHT, "--family", "vae", "--device", dev]
        secs, out = _run(cmd + ["--no-prefect", "--json"], env, timeout=1800)
        summary = json.loads(out.strip().splitlines()[-1])
        if summary["n_scored"] != sizes.night:
            raise RuntimeError(f"the night scored {summary['n_scored']} clips, not {sizes.night}")
        rates[dev] = sizes.night / secs
        gpu = dev == "cuda"
        rows.append(
            Row(
                f"{sizes.night:,}-clip VAE night, `slidead score --device {dev}` (fresh process, new clips)",
                f"{rates[dev]:,.0f} clips/s ({secs:.1f} s)",
                ">= 2,000 clips/s" if gpu and sizes == FULL else "",
                ("yes" if rates[dev] >= 2000 else "no") if gpu and sizes == FULL else "",
            )
        )
    if len(rates) == 2:
        rows.append(Row("the same night, GPU against CPU", f"{rates[device] / rates['cpu']:.1f}x"))
    return rows


def largest_batch(device: str, limit: int) -> tuple[int, float]:
    """The largest power-of-two batch of VAE windows one scoring forward pass takes on ``device``
    (up to ``limit``), and its windows/s."""
    import torch

    from slidead.core.models import build

    model = build("vae").to(device).eval()
    best, rate, b = 0, 0.0, 1 << 12
    while b <= limit:
        try:
            x = torch.randn(b, 640, device=device)
            with torch.no_grad():
                model.window_errors(x)  # warm-up at this size
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                model.window_errors(x)
                if device == "cuda":
                    torch.cuda.synchronize()
            best, rate = b, b / (time.perf_counter() - t0)
            del x
        except getattr(torch, "OutOfMemoryError", RuntimeError):
            break
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
        b *= 2
    return best, rate


def step_batch(device: str, sizes: Sizes) -> list[Row]:
    best, rate = largest_batch(device, sizes.max_batch)
    capped = " (the search's cap)" if best >= sizes.max_batch else ""
    return [
        Row(
            "largest batch of VAE windows in one scoring pass (fp32)",
            f"{best:,} windows{capped}, {rate:,.0f} windows/s",
        )
    ]


def pytest_counts(text: str) -> dict[str, int]:
    """``{"passed": n, "failed": n, "skipped": n, ...}`` from pytest's last summary line."""
    counts = {}
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", text):
        counts["error" if what.startswith("error") else what] = int(n)
    return counts


def gpu_test_files() -> list[str]:
    """The test modules that hold ``gpu`` tests (collecting the whole suite takes longer than them)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py") if "mark.gpu" in p.read_text())


def step_tests(device: str) -> tuple[list[Row], bool]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rs", "-p", "no:cacheprovider", *gpu_test_files()]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    if p.returncode not in (0, 5):
        print(p.stdout[-6000:], flush=True)  # which test failed, and why
    c = pytest_counts(p.stdout)
    passed, failed, skipped = c.get("passed", 0), c.get("failed", 0) + c.get("error", 0), c.get("skipped", 0)
    ok = p.returncode in (0, 5) and failed == 0 and (device != "cuda" or (skipped == 0 and passed > 0))
    value = f"{passed} passed, {failed} failed, {skipped} skipped"
    return [Row("`gpu` tests (CPU and GPU scores agree, fp32 and bf16)", value, "all pass", "yes" if ok else "no")], ok


def table(rows: list[Row], device: str, when: str, load: str, seconds: float) -> str:
    lines = [
        f"## GPU check ({when})",
        "",
        f"`make gpu-check` on {device}; load average {load}; {seconds:.0f} s in all.",
        "",
        "| what | measured | target | met |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {r.what} | {r.value} | {r.target} | {r.met} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--dry", action="store_true", help="every step small (24-clip night, 12 training clips, 1 epoch)")
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"), help="where the table is appended")
    ap.add_argument("--work-dir", default=None, help="where the plant is written (default: a temporary folder)")
    ap.add_argument("--no-tests", action="store_true", help="skip the `gpu` tests")
    ap.add_argument(
        "--epochs", type=int, default=None, help="train this many epochs instead (the night and batch steps unchanged)"
    )
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    if a.device == "cuda":
        sentence = no_cuda_sentence()
        if sentence:
            print(sentence, file=sys.stderr)
            return 2
    sizes = DRY if a.dry else FULL
    if a.epochs is not None:
        sizes = Sizes(sizes.train_per_id, sizes.night, a.epochs, sizes.max_batch)
    device = device_name(a.device)
    print(f"gpu-check on {device}: {'dry run, small sizes' if a.dry else 'full sizes'}", flush=True)
    rows: list[Row] = []
    ok = True
    # the `gpu` tests first: the quickest answer to whether the GPU path is right at all
    if not a.no_tests:
        got, passed = step_tests(a.device)
        rows += got
        ok = ok and passed
        print(f"  {got[0].what}: {got[0].value}", flush=True)
    with tempfile.TemporaryDirectory(dir=a.work_dir, prefix="slidead-gpu-check-") as tmp:
        work = Path(tmp)
        home = work / "home"
        secs = make_plant(home, sizes)
        print(f"  plant written in {secs:.0f} s (not counted)", flush=True)
        for name, step in (
            ("training", lambda: step_train(home, a.device, sizes)),
            ("night", lambda: step_night(home, work, a.device, sizes)),
            ("batch", lambda: step_batch(a.device, sizes)),
        ):
            try:
                got = step()
            except Exception as e:  # noqa: BLE001 - the table says which step failed and why
                got, ok = [Row(f"{name} step", f"failed: {str(e)[:300]}", "runs", "no")], False
            for r in got:
                print(f"  {r.what}: {r.value}", flush=True)
            rows += got
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") + (", dry run" if a.dry else "")
    text = table(rows, device, when, load, time.perf_counter() - t_start)
    print("\n" + text, flush=True)
    with open(a.results, "a") as f:
        f.write("\n" + text)
    print(f"appended to {a.results}", flush=True)
    if not ok:
        print("gpu-check: a step failed (see the table).", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

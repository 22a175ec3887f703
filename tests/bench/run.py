"""slidead benchmarks: figures and ratios against a reference measured in the same run.

Not tests: nothing here asserts a speed. Run with ``make bench`` (``BENCH_ARGS=--full`` for
the 2,000-clip night). Sections:

1. feature extraction (read + decode + log-mel + windows), clips/s, against the DCASE 2020
   baseline's way (librosa, one file at a time);
2. end-to-end nightly scoring (WAV in the store -> rows in DuckDB), clips/s and peak RSS, AE
   and VAE, local folder and S3 (moto's server on 127.0.0.1), against a naive per-file loop;
3. training seconds per epoch at the seed's training-set size (2,370 clips);
4. scaling of the score flow over local Dask worker processes;
5. memory (``--only memory``, in ``--full``): peak RSS of scoring a 10,000-clip night end to end
   against a 1,000-clip night, and of training on 2,370 clips in memory against streaming them
   from the Parquet feature store; each in a fresh process;
6. the paths users run (``--only paths``, not in the default set: it starts a ``prefect server``
   and takes a while): the library call (``run_score(..., use_prefect=False)`` timed in a fresh
   process, the reference), ``slidead score`` as typed (no ``PREFECT_API_URL``), ``slidead
   score`` against a running ``prefect server``, and ``prefect deployment run score/nightly
   --watch`` against ``slidead serve``; 600- and 2,000-clip nights (``--paths-clips``), AE and
   VAE, local store, each night with an empty feature store and the champions' cache a home has
   after its first night; beside them the bench's naive per-file loop over the same clips (in a
   fresh process, timed without its start-up); first a 10-clip AE night as typed (with and
   without that cache), then the re-run of a fully scored night and ``slidead models``.
   Commands are timed from start to exit. ``--paths-no-prefect`` leaves out the two Prefect rows.
7. the results lake (``--only lake``, not in the default set): the load of a 2,000-clip night
   (``--lake-clips``) after ``--lake-nights`` earlier ones, and each ``sql/`` file's query time,
   in the DuckLake (SQLite catalog, local data files) against the single DuckDB file of earlier
   versions (the same statements, primary keys on), same run; with ``--lake-year``, 365 nights
   before and after the lake's compaction.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/ helpers (the S3 server)

NIGHT = "2026-11-23"


def line(label: str, value: str, ratio: str = "") -> None:
    print(f"  {label:<52} {value:>16}  {ratio}", flush=True)


def make_clips(n: int, seed: int = 0, ids=("00", "02", "04")) -> list[tuple[str, bytes]]:
    from slidead.synth.sounds import FAULTS, anomalous_clip, machine_build, normal_clip, wav_bytes

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        mid = ids[i % len(ids)]
        b = machine_build("slider", mid, seed)
        x = anomalous_clip(b, rng, FAULTS[i % 4], 0.7) if i % 10 == 9 else normal_clip(b, rng)
        out.append((f"drops/{NIGHT}/slider/id_{mid}/{i:05d}.wav", wav_bytes(x)))
    return out


# -- 1. features ---------------------------------------------------------------------------


def bench_features(clips: list[bytes]) -> None:
    import torch

    from slidead.core.audio import decode
    from slidead.core.features import LogMel, windows
    from slidead.core.models import for_family

    print("\n1. Feature extraction: read + decode + log-mel (128 mels) + 5-frame windows, 2 CPU cores")
    cfg = for_family("vae")
    lm = LogMel(cfg)

    def ours_per_clip(clips=clips):
        for b in clips:
            windows(lm(decode(b).audio), cfg.frames)

    def ours_batched(clips=clips, batch=64):
        for s in range(0, len(clips), batch):
            audio = np.stack([decode(b).audio for b in clips[s : s + batch]])
            windows(lm.tensor(audio), cfg.frames)

    def ours_threads(clips=clips, workers=os.cpu_count() or 2):
        from concurrent.futures import ThreadPoolExecutor

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one clip per core instead of two threads per small FFT
        try:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda b: windows(lm(decode(b).audio), cfg.frames), clips))
        finally:
            torch.set_num_threads(threads)

    def reference(clips=clips):
        import librosa

        for b in clips:  # the DCASE 2020 baseline's file_to_vector_array, one file at a time
            y, sr = librosa.load(io.BytesIO(b), sr=None, mono=False)
            mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=512, n_mels=128, power=2.0)
            log_mel = 20.0 / 2.0 * np.log10(mel + sys.float_info.epsilon)
            n = log_mel.shape[1] - 5 + 1
            v = np.zeros((n, 640), np.float32)
            for t in range(5):
                v[:, 128 * t : 128 * (t + 1)] = log_mel[:, t : t + n].T

    try:
        import librosa  # noqa: F401

        has_ref = True
    except ImportError:
        has_ref = False
    times = {}
    for name, fn in (
        ("reference: librosa, one file at a time", reference if has_ref else None),
        ("slidead, one clip at a time", ours_per_clip),
        ("slidead, batches of 64", ours_batched),
        ("slidead, a clip per core (thread pool)", ours_threads),
    ):
        if fn is None:
            line(name, "librosa missing")
            continue
        fn(clips[:5])  # warm up (imports, JIT, FFT plans)
        t0 = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - t0
    ref = times.get("reference: librosa, one file at a time")
    for name, t in times.items():
        rate = len(clips) / t
        ratio = f"{ref / t:5.2f}x reference" if ref else ""
        line(name, f"{rate:8.1f} clips/s", ratio)
    # compute floor: the STFT (313 frames x 5 N log2 N, N = 1024) and the mel projection, which
    # is sparse (each FFT bin feeds at most two Slaney bands: ~1,000 weights for 128 mels)
    stft = 313 * 5 * 1024 * np.log2(1024)
    mel_dense, mel_sparse = 313 * 513 * 128 * 2, 313 * 1009 * 2
    best = min(t for k, t in times.items() if k.startswith("slidead")) / len(clips)
    line("STFT per clip, MFLOP", f"{stft / 1e6:8.1f}")
    line("mel projection per clip, MFLOP (dense / sparse)", f"{mel_dense / 1e6:6.1f} / {mel_sparse / 1e6:.1f}")
    line(
        "slidead best time per clip, ms",
        f"{best * 1e3:8.2f}",
        f"= {(stft + mel_sparse) / best / 1e9:.1f} GFLOP/s useful on {os.cpu_count()} cores",
    )


# -- 2. end to end -------------------------------------------------------------------------


def _score_child(home: str, store: str, endpoint: str | None, family: str, q) -> None:
    from slidead.settings import Settings
    from slidead.shell.commands import run_score

    settings = Settings(
        home=Path(home),
        store=store,
        s3_endpoint=endpoint,
        mlflow_uri=f"sqlite:///{home}/../mlflow.db",
        duckdb=f"{home}/slidead.duckdb",
    )
    t0 = time.perf_counter()
    out = run_score(settings, NIGHT, family, use_prefect=False)
    q.put((time.perf_counter() - t0, out["n_scored"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _timed_child(*args):
    return _in_child(_score_child, *args)


def naive_reference(svc, loaded, keys: list[str]) -> float:
    """clips/s of a per-file loop: get, decode, log-mel, model, mean; no shards, no DuckDB."""
    import torch

    from slidead.core.audio import decode
    from slidead.core.features import LogMel, windows

    cfg = loaded.config
    lm = LogMel(cfg.features)
    t0 = time.perf_counter()
    with torch.no_grad():
        for k in keys:
            x = torch.as_tensor(windows(lm(decode(svc.store.get(k)).audio), cfg.features.frames))
            float(((loaded.model(x) - x) ** 2).mean())
    return len(keys) / (time.perf_counter() - t0)


def bench_end_to_end(n_clips: int, work: Path) -> None:
    import boto3
    from s3server import CREDS, MotoServer

    from slidead.settings import Settings
    from slidead.shell.commands import run_retrain
    from slidead.store.services import Services
    from slidead.synth.plant import PlantSpec, generate_plant

    print(
        f"\n2. End-to-end nightly scoring, {n_clips} clips: WAV in the store -> rows in DuckDB "
        "(each run in a fresh process with an empty feature store)"
    )
    base = work / "base"
    settings = Settings(home=base)
    svc = Services.from_settings(settings)
    generate_plant(svc.store.put, PlantSpec(n_train=6, n_eval_normal=3, n_eval_anomaly=3, nights=()))
    for fam in ("ae", "vae"):
        run_retrain(settings, fam, "slider", epochs=1, use_prefect=False)
    clips = make_clips(n_clips, seed=1)
    os.environ.update(CREDS)
    server = MotoServer().start()
    s3 = boto3.client("s3", endpoint_url=server.endpoint)
    s3.create_bucket(Bucket="bench")
    try:
        for fam in ("ae", "vae"):
            loaded = svc.tracker.load(f"slidead-slider-{fam}")
            local_store = work / f"local-{fam}" / "store"
            for key, data in clips:
                p = local_store / key
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            ref_svc = Services.from_settings(Settings(home=work / f"local-{fam}"))
            ref = naive_reference(ref_svc, loaded, [k for k, _ in clips[: min(200, n_clips)]])
            line(f"reference: naive per-file loop, {fam}", f"{ref:8.1f} clips/s")
            for where in ("local", "s3"):
                if where == "s3":
                    prefix = f"run-{fam}"
                    for key, data in clips:
                        s3.put_object(Bucket="bench", Key=f"{prefix}/{key}", Body=data)
                    store, endpoint = f"s3://bench/{prefix}", server.endpoint
                else:
                    store, endpoint = str(local_store), None
                home = work / f"home-{fam}-{where}"
                home.mkdir()
                # share the trained models: MLflow db sits in work/ (see _score_child)
                shutil.copy(base / "mlflow.db", work / "mlflow.db") if not (work / "mlflow.db").exists() else None
                secs, n, rss = _timed_child(str(home), store, endpoint, fam)
                assert n == n_clips, (n, n_clips)
                rate = n / secs
                line(
                    f"slidead {fam}, {where} store",
                    f"{rate:8.1f} clips/s",
                    f"{rate / ref:5.2f}x reference, peak RSS {rss:,.0f} MiB",
                )
    finally:
        server.stop()


# -- 3. training ---------------------------------------------------------------------------


def bench_training(device: str) -> None:
    import torch

    from slidead.core.features import windows
    from slidead.core.models import build
    from slidead.core.train import FrameWindows, TrainConfig, fit

    print(f"\n3. Training, seconds per epoch at the seed's training-set size (2,370 clips x 309 windows), {device}")
    n_full = 2370 * 309
    for fam, dim in (("ae", 320), ("vae", 640)):
        n = n_full if device != "cpu" else 60_000
        rng = np.random.default_rng(0)
        logmels = [rng.normal(size=(dim // 5, 313)).astype(np.float32) for _ in range(n // 309 + 1)]
        x = FrameWindows(logmels, 5)
        val = FrameWindows(logmels[: max(1, len(logmels) // 20)], 5)
        ref = reference_epoch(fam, np.concatenate([windows(m, 5) for m in logmels]), device) * n_full / len(x)
        r = fit(build(fam), x, val, TrainConfig(epochs=2, patience=5, device=device))
        per_epoch = r.seconds / r.epochs_run * n_full / len(x)
        line(f"reference: DataLoader loop over stored windows, {fam}", f"{ref:8.1f} s/epoch")
        line(
            f"slidead {fam} (measured on {len(x):,} windows, scaled)",
            f"{per_epoch:8.1f} s/epoch",
            f"{ref / per_epoch:5.2f}x reference; 100 epochs = {per_epoch * 100 / 60:.1f} min",
        )
        if device != "cpu":
            torch.cuda.empty_cache()


def reference_epoch(family: str, x: np.ndarray, device: str) -> float:
    """One epoch the plain way: materialised windows, a shuffling DataLoader, Adam."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from slidead.core.models import build
    from slidead.core.models import family as family_of_name

    model = build(family).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(torch.from_numpy(x)), batch_size=family_of_name(family).batch_size, shuffle=True)
    t0 = time.perf_counter()
    for (xb,) in loader:
        xb = xb.to(device)
        if xb.shape[0] < 2:
            continue
        loss, _ = model.loss(xb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


# -- 4. scaling ----------------------------------------------------------------------------


def bench_scaling(n_clips: int, work: Path) -> None:
    """The score flow on a local Dask cluster of 1 and 2 worker processes (same night, fresh stores)."""
    from slidead.settings import Settings
    from slidead.shell.commands import prefect_env, run_retrain
    from slidead.store.services import Services
    from slidead.synth.plant import PlantSpec, generate_plant

    print(f"\n4. Scaling: the score flow, {n_clips} clips, AE, shards of 64, on a local Dask cluster")
    base = work / "base"
    settings = Settings(home=base)
    generate_plant(
        Services.from_settings(settings).store.put, PlantSpec(n_train=6, n_eval_normal=3, n_eval_anomaly=3, nights=())
    )
    run_retrain(settings, "ae", "slider", epochs=1, use_prefect=False)
    clips = make_clips(n_clips, seed=4)
    os.environ["SLIDEAD_MLFLOW_URI"] = settings.tracking_uri
    prefect_env(settings)
    from flows.score import score

    rates = {}
    for workers in (1, 2):
        home = work / f"scale-{workers}"
        for key, data in clips:
            p = home / "store" / key
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        os.environ.update(SLIDEAD_HOME=str(home), SLIDEAD_DASK_WORKERS=str(workers))
        t0 = time.perf_counter()
        out = score(night=NIGHT, family="ae", shard_size=64)
        rates[workers] = out["n_scored"] / (time.perf_counter() - t0)
        ratio = f"{rates[workers] / rates[1]:5.2f}x one worker" if workers > 1 else "reference"
        line(f"{workers} worker process(es), cluster start included", f"{rates[workers]:8.1f} clips/s", ratio)
    os.environ.pop("SLIDEAD_DASK_WORKERS", None)


# -- 5. memory -----------------------------------------------------------------------------


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _in_child(target, *args):
    """Run ``target(*args, q)`` in a fresh spawned process; returns what it put on ``q``."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    res = q.get()
    p.join()
    return res


def _plant_part(root: str, spec_kw: dict) -> int:
    """One machine ID's share of a synthetic plant, written as files under ``root``."""
    from slidead.store.objects import LocalObjectStore
    from slidead.synth.plant import PlantSpec, generate_plant

    return generate_plant(LocalObjectStore(root).put, PlantSpec(**spec_kw))["total"]


def write_plant(root: Path, per_id: dict[str, dict], procs: int = 2) -> int:
    """``slidead.synth.plant.generate_plant`` per machine ID, the IDs spread over ``procs`` processes (a
    clip's audio depends on its seed, split, ID and index only, so this equals one call per ID)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(procs, mp_context=mp.get_context("spawn")) as pool:
        return sum(
            pool.map(
                _plant_part, [str(root)] * len(per_id), [dict(kw, machine_ids=(mid,)) for mid, kw in per_id.items()]
            )
        )


def _night_spec(n: int, ids=("00", "02", "04")) -> dict[str, dict]:
    out = {}
    for k, mid in enumerate(ids):
        m = n // len(ids) + (1 if k < n % len(ids) else 0)
        out[mid] = dict(
            n_train=0,
            n_eval_normal=0,
            n_eval_anomaly=0,
            nights=(NIGHT,),
            night_normal=m - m // 10,
            night_anomaly=m // 10,
            seed=5,
        )
    return out


def _train_child(home: str, mode: str, family: str, q) -> None:
    from slidead.core.config import RunConfig
    from slidead.jobs import retrain as steps
    from slidead.settings import Settings
    from slidead.store.services import Services

    svc = Services.from_settings(Settings(home=Path(home)))
    cfg = RunConfig.default(family, "slider", epochs=1, device="cpu", stream=mode)
    data = steps.ingest_sets(svc, "slider", [cfg.features])
    before = _rss_mib()
    t0 = time.perf_counter()
    out = steps.train_and_evaluate(cfg, data.rows(cfg.features, "train"), data.rows(cfg.features, "eval"))
    q.put(
        (
            before,
            _rss_mib(),
            time.perf_counter() - t0,
            out.history["val_loss"][-1],
            out.data["n_train_clips"] + out.data["n_val_clips"],
            out.data["train_streamed"],
        )
    )


def _ingest_child(home: str, family: str, q) -> None:
    from slidead.core.models import for_family
    from slidead.jobs import retrain as steps
    from slidead.settings import Settings
    from slidead.store.services import Services

    data = steps.ingest_sets(Services.from_settings(Settings(home=Path(home))), "slider", [for_family(family)])
    q.put(len(data.train.refs))


def bench_memory(n_night: int, n_train: int, work: Path, family: str = "vae") -> None:
    from slidead.settings import Settings
    from slidead.shell.commands import run_retrain
    from slidead.store.services import Services
    from slidead.synth.plant import PlantSpec, generate_plant

    print(f"\n5. Memory: peak RSS (ru_maxrss) of each step in a fresh process, {time.strftime('%Y-%m-%d %H:%M')}")
    need = n_night * 330_000 + n_train * 330_000 + (2 << 30)
    free = shutil.disk_usage(work).free
    if free < need:
        print(f"  skipped: {free / 2**30:.1f} GiB free under {work}, {need / 2**30:.1f} GiB needed")
        return
    # (a) a night of n_night clips and one of 1,000 (its first clips), scored end to end by an AE champion
    base = work / "base"
    settings = Settings(home=base)
    generate_plant(
        Services.from_settings(settings).store.put, PlantSpec(n_train=6, n_eval_normal=3, n_eval_anomaly=3, nights=())
    )
    run_retrain(settings, "ae", "slider", epochs=1, use_prefect=False)
    big = work / f"night-{n_night}" / "store"
    t0 = time.perf_counter()
    write_plant(big, _night_spec(n_night))
    print(
        f"  wrote {n_night} synthetic clips in {time.perf_counter() - t0:.0f} s "
        f"({sum(f.stat().st_size for f in big.rglob('*.wav')) / 2**30:.2f} GiB)",
        flush=True,
    )
    small_n = min(1000, n_night)
    small = work / f"reference-night-{small_n}" / "store"
    per_id = _night_spec(small_n)
    for mid, kw in per_id.items():  # the first clips of each ID: hard links, same bytes
        src = big / "drops" / NIGHT / "slider" / f"id_{mid}"
        dst = small / "drops" / NIGHT / "slider" / f"id_{mid}"
        dst.mkdir(parents=True)
        for f in sorted(src.glob("*.wav"))[: kw["night_normal"] + kw["night_anomaly"]]:
            os.link(f, dst / f.name)
    rss = {}
    for n, store in ((small_n, small), (n_night, big)):
        home = store.parent / "home"
        home.mkdir()
        shutil.copy(base / "mlflow.db", store.parent / "mlflow.db")  # _score_child reads <home>/../mlflow.db
        secs, scored, peak = _timed_child(str(home), str(store), None, "ae")
        assert scored == n, (scored, n)
        rss[n] = peak
        ratio = "reference" if n == small_n else f"{peak / rss[small_n]:4.2f}x the {small_n}-clip night"
        line(
            f"score a {n:,}-clip night end to end, AE, local store",
            f"{peak:8,.0f} MiB peak",
            f"{n / secs:6.1f} clips/s, {secs:5.0f} s; {ratio}",
        )
    # (b) training on n_train clips: in memory against streamed from the feature store
    home = work / "train"
    per_id = {
        mid: dict(
            n_train=n_train // 3 + (1 if k < n_train % 3 else 0), n_eval_normal=10, n_eval_anomaly=10, nights=(), seed=6
        )
        for k, mid in enumerate(("00", "02", "04"))
    }
    write_plant(home / "store", per_id)
    n_ing = _in_child(_ingest_child, str(home), family)
    print(f"  training set: {n_ing} clips, features ingested beforehand (each run reuses them)", flush=True)
    ref = None
    for mode in ("memory", "parquet"):
        before, peak, secs, val, n_clips, streamed = _in_child(_train_child, str(home), mode, family)
        assert streamed == (mode == "parquet") and n_clips == n_ing
        ref = ref or peak - before
        ratio = "reference" if mode == "memory" else f"{(peak - before) / ref:4.2f}x memory's growth"
        line(
            f"train {family}, {n_clips:,} clips, 1 epoch, {mode}",
            f"{peak:8,.0f} MiB peak",
            f"+{peak - before:,.0f} MiB over ingest ({before:,.0f}); {secs:4.0f} s, val loss {val:.2f}; {ratio}",
        )


# -- 6. the paths users run ----------------------------------------------------------------

BIN = Path(sys.executable).parent
REPO = HERE.parents[1]


def _run_timed(cmd: list[str], env: dict, cwd: Path | None = None) -> tuple[float, float, str]:
    """Run ``cmd`` to the end: (wall seconds from start to exit, its peak RSS in MiB, stdout+stderr)."""
    import subprocess

    # GNU time reports the command's own peak RSS (a child forked from this process would
    # inherit its high-water mark in ru_maxrss); its fork and exec cost ~1 ms
    timer = ["/usr/bin/time", "-f", "peak-rss-kb %M"] if Path("/usr/bin/time").exists() else []
    t0 = time.perf_counter()
    p = subprocess.run(timer + cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    secs = time.perf_counter() - t0
    out = p.stdout
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} exited with {p.returncode}:\n{out[-3000:]}")
    rss = float("nan")
    if timer:
        head, _, last = out.rstrip("\n").rpartition("\n")
        rss, out = int(last.split()[-1]) / 1024, head
    return secs, rss, out


def _wait_http(url: str, proc, seconds: float) -> float:
    import urllib.request

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return time.perf_counter() - t0
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(url)


_CACHE: list[Path] = []  # a champion cache to copy into each fresh home (bench_paths sets it)


def _night_home(root: Path, night_src: Path, cache: bool = True) -> Path:
    """A fresh SLIDEAD_HOME whose store holds the night (hard links): empty feature store and
    results; with the champions' cache a home has after its first night (``cache``), as on a
    user's machine from the second night on."""
    home = root
    dst = home / "store" / "drops" / NIGHT
    for f in night_src.rglob("*.wav"):
        t = dst / f.relative_to(night_src)
        t.parent.mkdir(parents=True, exist_ok=True)
        os.link(f, t)
    if cache and _CACHE:
        shutil.copytree(_CACHE[0], home / "cache")
    return home


def _child_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SLIDEAD_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a user's machine: imports come from .pyc files
    env.update(SLIDEAD_DEVICE="cpu", DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.update(extra)
    return env


def _ensure_bytecode() -> None:
    """Compile the environment's modules once, as a first run does where bytecode may be written
    (this machine sets PYTHONDONTWRITEBYTECODE: without it every process would compile ~2,800
    modules, several seconds of each command)."""
    import compileall
    import site

    sp = Path(site.getsitepackages()[0])
    if (sp / "mlflow" / "__pycache__").exists() and (sp / "prefect" / "__pycache__").exists():
        return
    t0 = time.perf_counter()
    compileall.compile_dir(str(sp), quiet=2, workers=os.cpu_count() or 1)
    for d in ("slidead", "flows", "deployments"):
        compileall.compile_dir(str(REPO / d), quiet=2)
    print(f"  compiled the environment's bytecode once: {time.perf_counter() - t0:.0f} s", flush=True)


def bench_paths(sizes: list[int], work: Path, with_prefect: bool = True, night_src: Path | None = None) -> None:
    import subprocess

    from s3server import free_port

    from slidead.settings import Settings
    from slidead.shell.commands import run_retrain
    from slidead.store.services import Services
    from slidead.synth.plant import PlantSpec, generate_plant

    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\n6. The paths users run, {time.strftime('%Y-%m-%d %H:%M')}, load average {load} on {os.cpu_count()} cores: "
        "each night in a fresh process with an empty feature store, local store; wall seconds, ratio "
        "against the library path; each fresh home holds the champions' cache a home has after its first night "
        "(except where a row says it is empty)"
    )
    _ensure_bytecode()
    base = work / "base"
    settings = Settings(home=base)
    svc = Services.from_settings(settings)
    generate_plant(svc.store.put, PlantSpec(n_train=6, n_eval_normal=3, n_eval_anomaly=3, nights=()))
    for fam in ("ae", "vae"):
        run_retrain(settings, fam, "slider", epochs=1, use_prefect=False)
        loaded = svc.tracker.load(f"slidead-slider-{fam}")  # a second version each: four to list
        svc.tracker.register_thresholds(loaded, loaded.thresholds, "bench: a second version to list")
    mlflow_uri = settings.tracking_uri
    from slidead.jobs.champions import load_champion

    cached = Services.from_settings(Settings(home=work / "cached", mlflow_uri=mlflow_uri))
    for fam in ("ae", "vae"):  # downloaded once through MLflow, kept in work/cached/cache
        load_champion(cached, f"slidead-slider-{fam}")
    _CACHE[:] = [work / "cached" / "cache"]
    nights = {}
    biggest = max(sizes)
    src = night_src or work / "night-src"
    if night_src is None or len(list((src / "drops" / NIGHT).rglob("*.wav"))) < biggest:
        for key, data in make_clips(biggest, seed=1):
            p = src / key
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    for n in sizes:  # the first n clips (make_clips spreads them over the IDs in turn)
        nights[n] = work / f"night-{n}"
        for f in sorted((src / "drops" / NIGHT).rglob("*.wav")):
            if int(f.stem) < n:
                t = nights[n] / f.relative_to(src / "drops" / NIGHT)
                t.parent.mkdir(parents=True, exist_ok=True)
                os.link(f, t)

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    logs = work / "logs"
    logs.mkdir()
    server_env = _child_env(
        PREFECT_HOME=str(work / "prefect"), PREFECT_API_URL=api, PREFECT_SERVER_API_HOST="127.0.0.1"
    )
    served = work / "served"
    serve_env = dict(server_env, SLIDEAD_HOME=str(served), SLIDEAD_MLFLOW_URI=mlflow_uri)
    server = serve = None
    if with_prefect:
        server = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env,
            stdout=open(logs / "server.log", "w"),
            stderr=subprocess.STDOUT,
        )
    rows = []
    try:
        if with_prefect:
            up = _wait_http(f"{api}/health", server, 300)
            print(f"  prefect server answered /health after {up:.1f} s (not counted below)", flush=True)
            served.mkdir()
            serve = subprocess.Popen(
                [str(BIN / "slidead"), "serve"],
                env=serve_env,
                cwd=REPO,
                stdout=open(logs / "serve.log", "w"),
                stderr=subprocess.STDOUT,
            )
        ready = False
        # warm-up, not counted: a 10-clip night through the library and the CLI (page cache, first
        # reads of the registry and of the environment's files)
        warm = work / "night-warm"
        for f in sorted(nights[sizes[0]].rglob("*.wav"))[:10]:
            t = warm / f.relative_to(nights[sizes[0]])
            t.parent.mkdir(parents=True, exist_ok=True)
            os.link(f, t)
        _in_child(_lib_score_child, str(_night_home(work / "warm-lib", warm)), mlflow_uri, "ae")
        home = _night_home(work / "warm-cli", warm)
        _run_timed(
            [str(BIN / "slidead"), "score", "--night", NIGHT, "--family", "ae"],
            _child_env(SLIDEAD_HOME=str(home), SLIDEAD_MLFLOW_URI=mlflow_uri),
        )
        # a night that starts in a blink: 10 new clips, AE, as typed; then with an empty cache
        for k, cache in enumerate((True, False, True)):
            home = _night_home(work / f"cold-{k}", warm, cache=cache)
            secs, rss, out = _run_timed(
                [str(BIN / "slidead"), "score", "--night", NIGHT, "--family", "ae"],
                _child_env(SLIDEAD_HOME=str(home), SLIDEAD_MLFLOW_URI=mlflow_uri),
            )
            assert f"night {NIGHT}: 10 clips, 10 newly scored" in out, out[-2000:]
            what = "`slidead score`, 10 new clips" + (" (target: under 3 s)" if cache else ", empty champion cache")
            rows.append((10, "ae", what, secs, rss, None))
        _print_rows(rows)
        for n in sizes:
            for fam in ("ae", "vae"):
                # (a) the library call in a fresh process, timed around run_score (the reference)
                home = _night_home(work / f"lib-{fam}-{n}", nights[n])
                ref, ref_rss = _lib_child(str(home), mlflow_uri, fam, n)
                rows.append((n, fam, "library: run_score(use_prefect=False), fresh process", ref, ref_rss, ref))
                # (b) slidead score as typed: no PREFECT_API_URL
                home = _night_home(work / f"cli-{fam}-{n}", nights[n])
                cmd = [str(BIN / "slidead"), "score", "--night", NIGHT, "--family", fam]
                env = _child_env(SLIDEAD_HOME=str(home), SLIDEAD_MLFLOW_URI=mlflow_uri)
                secs, rss, out = _run_timed(cmd, env)
                assert f"night {NIGHT}: {n} clips, {n} newly scored" in out, out[-2000:]
                rows.append((n, fam, "`slidead score` (default: in this process)", secs, rss, ref))
                # (n) the bench's naive loop over the same night (get, decode, log-mel, model, mean per
                # file; no ledger, shards or DuckDB), timed without its start-up, in a fresh process
                home = _night_home(work / f"naive-{fam}-{n}", nights[n])
                secs, rss = _in_child(_naive_child, str(home), mlflow_uri, fam)
                rows.append((n, fam, "the bench's naive loop, per file (no start-up, no results)", secs, rss, ref))
                if n == min(sizes) and fam == "ae":  # the re-run of that fully scored night
                    secs, rss, out = _run_timed(cmd, env)
                    assert f"0 newly scored, {n} already scored" in out, out[-2000:]
                    rows.append((n, fam, "`slidead score` re-run, nothing new", secs, rss, None))
                    secs, rss, out = _run_timed([str(BIN / "slidead"), "models"], env)
                    assert out.count("slidead-slider-") == 4, out
                    rows.append((n, fam, "`slidead models` (four versions)", secs, rss, None))
                if not with_prefect:
                    _print_rows([r for r in rows if r[0] == n and r[1] == fam])
                    continue
                # (c) slidead score with PREFECT_API_URL: the score flow against the running server
                home = _night_home(work / f"srv-{fam}-{n}", nights[n])
                env = _child_env(
                    SLIDEAD_HOME=str(home),
                    SLIDEAD_MLFLOW_URI=mlflow_uri,
                    PREFECT_API_URL=api,
                    PREFECT_HOME=str(work / "prefect-cli"),
                )
                secs, rss, out = _run_timed(cmd, env)
                assert "mode: Prefect flow against" in out and f"{n} newly scored" in out, out[-2000:]
                rows.append((n, fam, "`slidead score` with PREFECT_API_URL (running server)", secs, rss, ref))
                # (d) prefect deployment run score/nightly --watch against slidead serve: the served
                # process keeps its SLIDEAD_HOME, so its night is reset to an empty feature store
                for d in ("store", "slidead.duckdb", "slidead.duckdb.wal"):
                    p = served / d
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                _night_home(served, nights[n], cache=False)  # the served home keeps its own cache
                cmd = [str(BIN / "prefect"), "deployment", "run", "score/nightly", "-p", f"night={NIGHT}"]
                cmd += ["-p", f"family={fam}", "--watch", "--watch-timeout", "1800"]
                if not ready:  # the deployment appears once `slidead serve` has registered it
                    t0 = time.perf_counter()
                    while subprocess.run(
                        [str(BIN / "prefect"), "deployment", "inspect", "score/nightly"],
                        env=server_env,
                        capture_output=True,
                    ).returncode:
                        if time.perf_counter() - t0 > 300 or serve.poll() is not None:
                            raise RuntimeError("slidead serve did not register score/nightly; see serve.log")
                        time.sleep(1)
                    ready = True
                secs, rss, out = _run_timed(cmd, server_env)
                assert "Completed" in out, out[-2000:]
                n_db = _count_scores(served / "slidead.duckdb", fam)
                assert n_db == n, (n_db, n)
                rows.append(
                    (n, fam, "`prefect deployment run score/nightly --watch` (slidead serve)", secs, float("nan"), ref)
                )
                _print_rows([r for r in rows if r[0] == n and r[1] == fam])
    finally:
        for proc in (serve, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"  load average at the end: {load}", flush=True)


def _print_rows(rows) -> None:
    for n, fam, path, secs, rss, ref in rows:
        parts = [] if ref is None else ["reference" if secs is ref else f"{secs / ref:5.2f}x library"]
        if "re-run" not in path and "models" not in path:
            parts.append(f"{n / secs:6.1f} clips/s")
        if rss == rss:
            parts.append(f"peak RSS {rss:,.0f} MiB")
        print(f"  {fam:<3} {n:>5}  {path:<66} {secs:7.1f} s  {', '.join(parts)}", flush=True)


def _count_scores(db: Path, fam: str) -> int:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT count(*) FROM scores WHERE family = ?", [fam]).fetchone()[0]


def _lib_score_child(home: str, mlflow_uri: str, family: str, q) -> None:
    from slidead.settings import Settings
    from slidead.shell.commands import run_score

    settings = Settings(home=Path(home), mlflow_uri=mlflow_uri, device="cpu")
    t0 = time.perf_counter()
    out = run_score(settings, NIGHT, family, use_prefect=False)
    q.put((time.perf_counter() - t0, out["n_scored"], _vm_hwm_mib()))


def _naive_child(home: str, mlflow_uri: str, family: str, q) -> None:
    from slidead.jobs.champions import load_champion
    from slidead.settings import Settings
    from slidead.store.services import Services

    svc = Services.from_settings(Settings(home=Path(home), mlflow_uri=mlflow_uri, device="cpu"))
    loaded = load_champion(svc, f"slidead-slider-{family}")
    keys = sorted(svc.store.list(f"drops/{NIGHT}/"))
    rate = naive_reference(svc, loaded, keys)
    q.put((len(keys) / rate, _vm_hwm_mib()))


def _vm_hwm_mib() -> float:
    """This process's peak RSS since its exec (ru_maxrss keeps the spawning parent's high-water mark)."""
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
    return float("nan")


def _lib_child(home: str, mlflow_uri: str, family: str, n: int) -> tuple[float, float]:
    secs, scored, rss = _in_child(_lib_score_child, home, mlflow_uri, family)
    assert scored == n, (scored, n)
    return secs, rss


# -- 7. the results lake against the single file ------------------------------------------------


def _file_load(path: Path, scores, clips, arrivals) -> None:
    """The load as the single-file versions did it: one DuckDB file with primary keys, the same
    statements in one transaction."""
    import duckdb

    from slidead.store import results as r

    con = duckdb.connect(str(path))
    try:
        con.execute("BEGIN TRANSACTION")
        for sql, batch in (
            (r._BULK["clips"], r._batch(r.CLIP_COLUMNS, clips)),
            (r._ARRIVALS, r._batch(r.ARRIVAL_COLUMNS, arrivals)),
        ):
            con.register("batch", batch)
            con.execute(sql)
            con.unregister("batch")
        con.register("shard", scores)
        con.execute(r._SCORES)
        con.execute("COMMIT")
    finally:
        con.close()


def _median_s(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _query_times(lake, file: Path, night: str) -> list[tuple[str, float, float]]:
    import duckdb

    from slidead.store.results import SQL_DIR

    out = []
    files = sorted(p for p in SQL_DIR.glob("*.sql") if p.name != "schema.sql")
    fcon = duckdb.connect(str(file), read_only=True)
    fcon.execute("SET VARIABLE night = ?::DATE", [night])
    with lake.connect(read_only=True) as lcon:
        lcon.execute("SET VARIABLE night = ?::DATE", [night])
        for f in files:
            sql = f.read_text()
            t_file = _median_s(lambda: fcon.execute(sql).fetchall())
            t_lake = _median_s(lambda: lcon.execute(sql).fetchall())
            out.append((f.stem, t_file, t_lake))
    fcon.close()
    return out


def _print_queries(rows, label: str) -> None:
    for name, t_file, t_lake in rows:
        line(
            f"  {name} ({label})",
            f"{t_lake * 1000:8.1f} ms lake",
            f"{t_file * 1000:.1f} ms file, {t_lake / t_file:.2f}x",
        )


def bench_lake(n_clips: int, n_nights: int, year: bool, work: Path) -> None:
    import datetime as dt

    import duckdb
    from lakekit import night_batch

    from slidead.store.results import SCHEMA_FILE, ResultsDB

    print(f"\n== results lake: a {n_clips}-clip night after {n_nights} nights, DuckLake against the single file")
    lake = ResultsDB(work / "slidead.duckdb", catalog=str(work / "slidead.ducklake"))
    lake.compact_above_files = None  # compaction measured on its own below
    file = work / "single.duckdb"
    with duckdb.connect(str(file)) as con:
        con.execute(SCHEMA_FILE.read_text())
    day0 = dt.date(2025, 1, 1)
    nights = [(day0 + dt.timedelta(days=i)).isoformat() for i in range(365 if year else n_nights + 1)]
    t_lake = t_file = 0.0
    for i, night in enumerate(nights):
        scores, clips, arrivals = night_batch(night, n_clips)
        t0 = time.perf_counter()
        lake.load_scores([scores], clips, [], arrivals)
        t1 = time.perf_counter()
        _file_load(file, scores, clips, arrivals)
        t2 = time.perf_counter()
        if i == n_nights:
            line(
                f"load of night {i + 1} ({n_clips} clips)",
                f"{t1 - t0:6.2f} s lake",
                f"{t2 - t1:.2f} s file, {(t1 - t0) / (t2 - t1):.2f}x",
            )
            _print_queries(_query_times(lake, file, night), f"{i + 1} nights")
        t_lake, t_file = t_lake + t1 - t0, t_file + t2 - t1
    if not year:
        return
    line(f"load of {len(nights)} nights", f"{t_lake:6.1f} s lake", f"{t_file:.1f} s file, {t_lake / t_file:.2f}x")
    before = _query_times(lake, file, nights[-1])
    _print_queries(before, "a year, not compacted")
    t0 = time.perf_counter()
    files = lake.compact()
    line(
        "compaction (merge_adjacent_files)",
        f"{time.perf_counter() - t0:6.1f} s",
        f"{files['files_before']} -> {files['files_after']} data files",
    )
    _print_queries(_query_times(lake, file, nights[-1]), "a year, compacted")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feature-clips", type=int, default=200)
    ap.add_argument("--night-clips", type=int, default=500)
    ap.add_argument("--full", action="store_true", help="a 2,000-clip night, and the memory section")
    ap.add_argument("--only", choices=["features", "e2e", "train", "scale", "memory", "paths", "lake"], action="append")
    ap.add_argument("--lake-clips", type=int, default=2000, help="clips per night in --only lake")
    ap.add_argument("--lake-nights", type=int, default=30, help="nights already loaded before the timed one")
    ap.add_argument("--lake-year", action="store_true", help="--only lake: 365 nights, before and after compaction")
    ap.add_argument(
        "--paths-clips", type=int, action="append", default=None, help="night sizes of --only paths (default 600, 2000)"
    )
    ap.add_argument(
        "--paths-no-prefect",
        action="store_true",
        help="--only paths without the Prefect rows (no `prefect server`, no `slidead serve`)",
    )
    ap.add_argument(
        "--paths-night-src",
        default=None,
        help="--only paths: a folder whose drops/ holds the night's clips from an earlier run (written there if "
        "it holds fewer than the biggest night)",
    )
    ap.add_argument("--memory-night", type=int, default=10_000, help="clips of the big night in --only memory")
    ap.add_argument("--memory-train", type=int, default=2370, help="training clips in --only memory")
    ap.add_argument("--work-dir", default=None, help="where --only memory writes its stores (default: temp)")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if a.full:
        a.night_clips = 2000
    print(f"slidead benchmarks on {os.cpu_count()} CPU cores (torch threads {__import__('torch').get_num_threads()})")
    only = set(a.only or ["features", "e2e", "train", "scale"] + (["memory"] if a.full else []))
    if "features" in only:
        bench_features([b for _, b in make_clips(a.feature_clips)])
    if "e2e" in only:
        with tempfile.TemporaryDirectory() as tmp:
            bench_end_to_end(a.night_clips, Path(tmp))
    if "train" in only:
        bench_training(a.device)
    if "scale" in only:
        with tempfile.TemporaryDirectory() as tmp:
            bench_scaling(a.night_clips, Path(tmp))
    if "memory" in only:
        with tempfile.TemporaryDirectory(dir=a.work_dir) as tmp:
            bench_memory(a.memory_night, a.memory_train, Path(tmp))
    if "paths" in only:
        with tempfile.TemporaryDirectory(dir=a.work_dir) as tmp:
            src = Path(a.paths_night_src) if a.paths_night_src else None
            bench_paths(sorted(a.paths_clips or [600, 2000]), Path(tmp), not a.paths_no_prefect, src)
    if "lake" in only:
        with tempfile.TemporaryDirectory(dir=a.work_dir) as tmp:
            bench_lake(a.lake_clips, a.lake_nights, a.lake_year, Path(tmp))


if __name__ == "__main__":
    main()

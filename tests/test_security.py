"""Security: no credential in logs, errors, the database, MLflow, Parquet or Prefect parameters;
SQL only with parameters; `slidead report` validates its arguments; servers bind 127.0.0.1;
models load from the project's own registry without unpickling code."""

from __future__ import annotations

import ast
import inspect
import io
import logging
import re
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
from faultkit import NIGHT, count, good_clips, put_night, services, tampered_champion
from s3server import MotoServer

from slidead.errors import ModelRegistryError, StoreError
from slidead.jobs import nightly
from slidead.settings import Settings
from slidead.shell.cli import main
from slidead.shell.commands import run_retrain, run_score
from slidead.store.services import Services
from slidead.synth.plant import PlantSpec, generate_plant

ROOT = Path(__file__).resolve().parents[1]
KEY_ID = "AKIASLIDEADFAKE4242"
SECRET = "slidead/FAKE+secret/0123456789abcdef"


def _leaks(text) -> list[str]:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return [s for s in (KEY_ID, SECRET) if s in text]


@pytest.mark.integration
@pytest.mark.slow
def test_no_credential_in_logs_errors_database_mlflow_or_parquet(tmp_path, monkeypatch, caplog, capsys):
    for k, v in {
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    caplog.set_level(logging.INFO)
    server = MotoServer().start()
    try:
        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="plant")
        settings = Settings(home=tmp_path, store="s3://plant/site", s3_endpoint=server.endpoint)
        svc = Services.from_settings(settings)
        generate_plant(
            svc.store.put,
            PlantSpec(
                machine_ids=("00",),
                n_train=6,
                n_eval_normal=3,
                n_eval_anomaly=3,
                nights=(NIGHT,),
                night_normal=2,
                night_anomaly=1,
                seed=1,
            ),
        )
        run_retrain(settings, "ae", "slider", epochs=1, use_prefect=False)
        run_score(settings, NIGHT, "ae", use_prefect=False)
        # a failing run: its error, its log line and its runs row
        broken = Services.from_settings(
            Settings(home=tmp_path, store="s3://no-such-bucket/x", s3_endpoint=server.endpoint)
        )
        with pytest.raises(StoreError, match="NoSuchBucket") as failed:
            nightly.run_night(broken, NIGHT, "ae")
        s3 = boto3.client("s3", endpoint_url=server.endpoint)
        objects = {
            o["Key"]: s3.get_object(Bucket="plant", Key=o["Key"])["Body"].read()
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket="plant")
            for o in page.get("Contents", [])
        }
    finally:
        server.stop()

    out = capsys.readouterr()
    assert not _leaks(caplog.text + out.out + out.err + str(failed.value))
    assert "mode: in this process" in caplog.text  # there were logs to look at
    # the database, every table
    with svc.db.connect(read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        dump = {t: con.execute("SELECT * FROM " + _ident(t)).fetchall() for t in tables}
    assert {"scores", "clips", "runs", "model_versions"} <= set(tables) and dump["scores"]
    assert not _leaks(repr(dump))
    # MLflow: params, tags and metric names of every run, and every file it keeps
    import mlflow

    client = mlflow.MlflowClient(settings.tracking_uri)
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        assert run.data.params and not _leaks(repr((run.data.params, run.data.tags, list(run.data.metrics))))
    # every file slidead wrote: mlflow.db, artifacts, the results lake's catalog
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any(p.suffix == ".ducklake" for p in files)
    assert not [p for p in files if _leaks(p.read_bytes())]
    # every object in the bucket: features and shard Parquet (with their metadata), the lock
    parquet = {k: v for k, v in objects.items() if k.endswith(".parquet")}
    assert any("/features/" in k for k in parquet) and any("/results/" in k for k in parquet)
    assert svc.db.data_path == "s3://plant/site/lake/"  # the results lake's files go beside them
    for key, data in objects.items():
        assert not _leaks(data), key
    for key, data in parquet.items():
        meta = pq.read_metadata(io.BytesIO(data))
        assert not _leaks(repr(meta.metadata) + meta.schema.to_arrow_schema().to_string()), key


def _ident(name: str) -> str:
    assert re.fullmatch(r"[a-z_]+", name), name  # a table name from the catalogue, checked
    return name


def test_flow_parameters_hold_no_credentials():
    """Prefect keeps a flow run's parameters; the flows take plain values, never settings or keys."""
    from flows.retrain import retrain
    from flows.score import score

    allowed = {
        "night",
        "family",
        "machine_type",
        "shard_size",
        "timezone",
        "epochs",
        "device",
        "tolerance",
        "seed",
        "patience",
        "metric",
        "stream",
        "thresholds",
    }
    for fl in (score, retrain):
        names = set(inspect.signature(fl.fn).parameters)
        assert names <= allowed, names - allowed
    deployments = (ROOT / "deployments" / "prefect.yaml").read_text()
    assert not re.search(r"(?i)(secret|password|access_key|token)\s*:", deployments)


def test_errors_never_show_url_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    from s3server import free_port

    svc = services(tmp_path, tracking_uri=f"http://analyst:{SECRET}@127.0.0.1:{free_port()}")
    put_night(svc.store, good_clips(1))
    with pytest.raises(ModelRegistryError) as e:
        nightly.run_night(svc, NIGHT, "ae")
    assert not _leaks(str(e.value))
    with svc.db.connect(read_only=True) as con:
        assert not _leaks(con.execute("SELECT detail FROM runs").fetchall())
    assert count(svc, "scores") == 0


# --- SQL is written with parameters only -------------------------------------------------------

_SQL_CALLS = {"execute", "executemany", "sql", "query", "register"}


def _dynamic(node: ast.AST) -> bool:
    """An f-string with fields, a + / % on strings, or a .format() call: SQL built from values."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return not (isinstance(node.left, ast.Constant) and isinstance(node.right, ast.Constant))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return True
    return False


def test_all_sql_in_the_code_uses_parameters():
    offenders = []
    for path in sorted([*(ROOT / "slidead").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _SQL_CALLS
                and node.args
                and _dynamic(node.args[0])
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"SQL built from strings at {offenders}"


@pytest.mark.parametrize(
    "args, complaint",
    [
        (["--night", "2026-11-23'; DROP TABLE scores; --"], "night"),
        (["--night", "yesterday"], "night"),
        (["--machine-type", "slider'; DROP TABLE scores; --"], "machine_type"),
        (["--machine-type", "../etc"], "machine_type"),
        (["--machine-id", "00 OR 1=1"], "machine_id"),
        (["--machine-id", "id_0x"], "machine_id"),
    ],
)
def test_report_refuses_bad_night_and_machine_arguments(tmp_path, monkeypatch, capsys, args, complaint):
    monkeypatch.setenv("SLIDEAD_HOME", str(tmp_path))
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"slidead report: error: {complaint}\b.*{re.escape(repr(args[1]))}", err), err
    assert not (tmp_path / "slidead.duckdb").exists()


def test_report_filters_one_machine(tmp_path, monkeypatch, capsys):
    svc = services(tmp_path)
    put_night(svc.store, good_clips(4))
    nightly.run_night(svc, NIGHT, "ae")
    monkeypatch.setenv("SLIDEAD_DUCKDB", svc.db.path)
    assert main(["report", "--only", "nightly_summary", "--machine-type", "slider", "--machine-id", "id_02"]) == 0
    out = capsys.readouterr().out
    assert "machine slider/id_02" in out and " 02 " in out and " 00 " not in out


# --- servers bind to 127.0.0.1 -----------------------------------------------------------------

_SERVER = re.compile(r"(prefect server start|mlflow (?:ui|server)|moto_server|duckdb -ui)[^\n`]*")
_HOST = re.compile(r"(?:--host|-H|-h)[\s=\"',]+([^\s\"',\]]+)")


def test_servers_in_code_and_docs_bind_to_localhost():
    """Every server command slidead runs or its docs show binds 127.0.0.1: named explicitly, or
    left to a default that is 127.0.0.1 (prefect server, mlflow ui/server)."""
    texts = {
        p: p.read_text()
        for p in [
            ROOT / "README.md",
            *ROOT.glob("docs/*.md"),
            *ROOT.glob("slidead/**/*.py"),
            *ROOT.glob("deployments/*"),
            ROOT / "Makefile",
        ]
        if p.is_file()
    }
    commands = [(path.name, m.group(0)) for path, text in texts.items() for m in _SERVER.finditer(text)]
    assert len(commands) >= 3
    for where, command in commands:
        hosts = _HOST.findall(command)
        assert all(h in ("127.0.0.1", "localhost") for h in hosts), f"{where}: {command!r}"
        if not hosts:
            assert command.startswith(("prefect server", "mlflow")), f"{where}: {command!r} names no host"
    compose = (ROOT / "docker" / "compose.yaml").read_text()
    ports = re.findall(r'"(\S+:\d+:\d+)"', compose)
    assert ports and all(p.startswith("127.0.0.1:") for p in ports), ports  # published on loopback only


def test_prefect_temporary_api_binds_to_localhost(monkeypatch):
    monkeypatch.delenv("PREFECT_SERVER_API_HOST", raising=False)
    from prefect.settings import PREFECT_SERVER_API_HOST

    assert PREFECT_SERVER_API_HOST.value() == "127.0.0.1"


# --- models come from the project's own registry, never unpickled -----------------------------


def test_a_pickle_in_the_registry_is_not_run(tmp_path):
    svc = services(tmp_path)
    put_night(svc.store, good_clips(1))
    with tampered_champion("pickle") as (uri, marker):
        with pytest.raises(ModelRegistryError, match="could not load the champion"):
            nightly.run_night(svc, NIGHT, "ae")
        assert not marker.exists()  # the payload never ran
    assert count(svc, "scores") == 0


def test_library_never_unpickles_models():
    """torch.load only with weights_only=True; no pickle.load or mlflow.pytorch.load_model."""
    offenders = []
    for path in sorted([*(ROOT / "slidead").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name in ("pickle.load", "pickle.loads", "mlflow.pytorch.load_model", "cloudpickle.load"):
                offenders.append(f"{path.name}:{node.lineno} {name}")
            if name == "torch.load" and not any(
                k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords
            ):
                offenders.append(f"{path.name}:{node.lineno} torch.load without weights_only=True")
    assert not offenders
    page = " ".join((ROOT / "docs" / "operations.md").read_text().split())  # the MLflow section
    assert "nothing in the registry is a pickle" in page and "trusted registry" in page

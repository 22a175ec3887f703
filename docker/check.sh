#!/usr/bin/env bash
# make docker-check: build the images and run a night through the compose stack, for real.
#
#  1. a Docker engine: the one that answers (DOCKER_HOST or the default socket), else start
#     dockerd with its own socket and folders under $SLIDEAD_DOCKER_ROOT (no bridge, no
#     iptables; stopped again at the end). Installs Debian's docker.io, docker-compose and
#     debootstrap first when they are missing (root only).
#  2. a base: python:3.11-slim when it can be pulled, else docker/local-base.sh's Debian image.
#  3. builds slidead-cpu, slidead-gpu (on the same CUDA-less base when nvidia/cuda cannot be
#     pulled; then its worker runs on the CPU), slidead-stack (the S3 stand-in's image) and
#     slidead-catalog (Debian's PostgreSQL: the results lake's catalog).
#  4. compose.yaml + compose.local.yaml: Prefect server, S3 (moto), the PostgreSQL catalog,
#     bucket init, MLflow, the CPU worker (pool cpu) and the GPU worker (pool gpu; on the CPU
#     where there is no GPU); prefect deploy --all, retrain/vae (3 epochs), two small nights
#     generated and uploaded to the bucket.
#  5. a reader: `slidead sql` in a third container, attached to the lake and querying it every
#     second; meanwhile both nights are scored AT ONCE, night A by the CPU worker
#     (score/nightly-cpu), night B by the GPU worker (score/nightly), each loading its own
#     night into the shared lake (catalog in PostgreSQL, Parquet in the bucket).
#  6. checks from a fresh container: each night's scores landed once (count per night equals
#     the ledger's scored, no duplicate key in any table, arrivals = scored + duplicates +
#     rejected, a completed run per night), the data files are in the bucket; the two flow
#     runs overlapped; the reader stayed attached across both loads, was never held up and saw
#     the new rows; the champion through MLflow's REST API; prints the figures; tears
#     everything down.
# Exits non-zero with one sentence on the first failure. Logs: $SLIDEAD_DOCKER_LOGS.
set -uo pipefail
cd "$(dirname "$0")/.."

ROOT=${SLIDEAD_DOCKER_ROOT:-/var/tmp/slidead-docker}     # own dockerd's data, exec root and socket
LOGS=${SLIDEAD_DOCKER_LOGS:-$ROOT/logs}
NIGHT=${SLIDEAD_CHECK_NIGHT:-2026-11-23}        # night A: scored by the CPU worker
NIGHT_B=${SLIDEAD_CHECK_NIGHT_B:-2026-11-24}     # night B: scored by the GPU worker, at the same time
EPOCHS=${SLIDEAD_CHECK_EPOCHS:-3}
PROJECT=slidead-check
mkdir -p "$LOGS"
T_START=$(date +%s)
STARTED_DOCKERD=0
REASON=""
READER=$PROJECT-reader   # the third container: slidead sql held open while both nights load
declare -A FIG

exec 3>&1   # the terminal: what the check says reaches it even from inside a step's redirection
say() { printf 'docker-check: %s\n' "$*" >&3; }
fail() { REASON="$*"; exit 1; }
# run a step with its output in $LOGS/<name>.log; on failure show its tail and stop
step() {
  local name=$1 why=$2; shift 2
  local t0=$(date +%s)
  say "$name ..."
  if ! "$@" >"$LOGS/$name.log" 2>&1; then
    tail -n 25 "$LOGS/$name.log" | sed 's/^/    | /'
    fail "$why (see $LOGS/$name.log)"
  fi
  FIG[$name]=$(( $(date +%s) - t0 ))
  say "$name done in ${FIG[$name]} s"
}

COMPOSE_FILES=(-f docker/compose.yaml -f docker/compose.local.yaml)
compose() { $COMPOSE -p "$PROJECT" "${COMPOSE_FILES[@]}" "$@"; }
wexec() { compose exec -T cpu-worker "$@"; }

teardown() {
  local rc=$?
  set +e
  if [ -n "${COMPOSE:-}" ] && docker info >/dev/null 2>&1; then
    if [ $rc -ne 0 ]; then
      for s in prefect minio catalog mlflow cpu-worker gpu-worker; do compose logs --no-color --tail 200 "$s" >"$LOGS/service-$s.log" 2>&1; done
    fi
    docker rm -f "$READER" >/dev/null 2>&1
    compose down -v --remove-orphans >"$LOGS/teardown.log" 2>&1
    local left_c left_v
    left_c=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
    left_v=$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
    if [ "$STARTED_DOCKERD" = 1 ]; then   # our own engine: nothing at all may be left
      left_c=$(docker ps -aq); left_v=$(docker volume ls -q)
    fi
    if [ -n "$left_c$left_v" ]; then
      [ $rc -eq 0 ] && { rc=1; REASON="containers or volumes were left after teardown: $left_c $left_v"; }
    else
      say "teardown: docker ps -a and docker volume ls are empty"
    fi
  fi
  if [ "$STARTED_DOCKERD" = 1 ] && [ -f "$ROOT/dockerd.pid" ]; then
    kill "$(cat "$ROOT/dockerd.pid")" 2>/dev/null
    for _ in $(seq 30); do [ -f "$ROOT/dockerd.pid" ] && kill -0 "$(cat "$ROOT/dockerd.pid")" 2>/dev/null || break; sleep 1; done
    say "stopped the dockerd this check started"
  fi
  if [ $rc -ne 0 ]; then
    say "FAILED: ${REASON:-exit status $rc}"
  elif [ "${PASSED:-0}" = 1 ]; then
    say "total wall time $(( $(date +%s) - T_START )) s (images, stack, night, teardown)"
  fi
  exit $rc
}
trap teardown EXIT
trap 'REASON="interrupted"; exit 130' INT TERM

# -- 1. engine and tools ----------------------------------------------------------------
need=()
command -v docker >/dev/null || need+=(docker.io)
command -v docker >/dev/null && docker info >/dev/null 2>&1 || command -v dockerd >/dev/null || need+=(docker.io)
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || fail "missing ${need[*]} and not root to install them"
  apt_install() { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; }
  step apt-install "apt-get could not install ${need[*]}" apt_install $(printf '%s\n' "${need[@]}" | sort -u)
fi
if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi

if ! docker info >/dev/null 2>&1; then
  export DOCKER_HOST=unix://$ROOT/docker.sock
  if ! docker info >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || fail "no Docker engine answers and starting dockerd needs root"
    mkdir -p "$ROOT/data" "$ROOT/exec"
    say "starting dockerd (socket $ROOT/docker.sock, data $ROOT/data, no bridge)"
    dockerd --bridge=none --iptables=false --ip-masq=false --data-root "$ROOT/data" --exec-root "$ROOT/exec" \
      -H "$DOCKER_HOST" --pidfile "$ROOT/dockerd.pid" >"$LOGS/dockerd.log" 2>&1 &
    STARTED_DOCKERD=1
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || fail "dockerd did not answer within 60 s (see $LOGS/dockerd.log)"
  fi
fi
say "engine $(docker version -f '{{.Server.Version}}') at ${DOCKER_HOST:-the default socket}; compose: $COMPOSE"
export COMPOSE_DOCKER_CLI_BUILD=0 DOCKER_BUILDKIT=0   # the classic builder: what a bare engine has

# -- 2. base images ---------------------------------------------------------------------
# An image already present counts; else try a pull (quickly), else make the local base.
have_or_pull() { docker image inspect "$1" >/dev/null 2>&1 || timeout 60 docker pull -q "$1" >/dev/null 2>&1; }
if [ -n "${SLIDEAD_BASE:-}" ]; then
  have_or_pull "$SLIDEAD_BASE" || fail "SLIDEAD_BASE=$SLIDEAD_BASE is neither present nor pullable"
elif have_or_pull python:3.11-slim; then
  SLIDEAD_BASE=python:3.11-slim
else
  SLIDEAD_BASE=slidead-base:bookworm
  docker image inspect "$SLIDEAD_BASE" >/dev/null 2>&1 \
    || step base "the local Debian base image could not be made" docker/local-base.sh "$SLIDEAD_BASE"
fi
if [ -z "${SLIDEAD_GPU_BASE:-}" ]; then
  if have_or_pull nvidia/cuda:13.0.0-runtime-ubuntu24.04; then SLIDEAD_GPU_BASE=nvidia/cuda:13.0.0-runtime-ubuntu24.04
  else SLIDEAD_GPU_BASE=$SLIDEAD_BASE; fi
fi
export SLIDEAD_BASE SLIDEAD_GPU_BASE
say "bases: cpu $SLIDEAD_BASE, gpu $SLIDEAD_GPU_BASE"
# Both files rendered into one: Compose v1 (docker-py) refuses the ports compose.yaml publishes
# once a service uses host networking (the engine would just discard them) and cannot reset a
# list from an override, so `ports` go from the host-networked services; and without a GPU
# here, the GPU worker's device reservation goes and it runs on the CPU (SLIDEAD_DEVICE=cpu).
HAVE_GPU=0
command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && HAVE_GPU=1
render_compose() {
  compose config | HAVE_GPU=$HAVE_GPU python3 -c '
import os, sys, yaml
cfg = yaml.safe_load(sys.stdin)
for svc in cfg["services"].values():
    if svc.get("network_mode") == "host":
        svc.pop("ports", None)
if os.environ["HAVE_GPU"] != "1":
    gpu = cfg["services"]["gpu-worker"]
    gpu.pop("deploy", None)
    env = gpu.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    env.update(SLIDEAD_DEVICE="cpu", CUDA_VISIBLE_DEVICES="")
    gpu["environment"] = env
yaml.safe_dump(cfg, sys.stdout, sort_keys=False)' >"$LOGS/compose.check.yaml"
}
step compose-config "compose.yaml with compose.local.yaml does not render" render_compose
COMPOSE_FILES=(-f "$LOGS/compose.check.yaml")
[ $HAVE_GPU = 1 ] && say "a GPU answers: the GPU worker runs on it" || say "no GPU here: the GPU worker's service runs on the CPU"

# -- 3. images --------------------------------------------------------------------------
build() { docker build --network host "$@" .; }
step build-cpu "docker build of slidead-cpu failed" build -f docker/Dockerfile.cpu --build-arg BASE="$SLIDEAD_BASE" -t slidead-cpu
step build-gpu "docker build of slidead-gpu failed" build -f docker/Dockerfile.gpu --build-arg BASE="$SLIDEAD_GPU_BASE" -t slidead-gpu
step build-stack "docker build of slidead-stack failed" build -f docker/Dockerfile.stack -t slidead-stack
step build-catalog "docker build of slidead-catalog (Debian's PostgreSQL) failed" build -f docker/Dockerfile.catalog \
  --build-arg BASE="$SLIDEAD_BASE" -t slidead-catalog
size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.2f GB", $1/1e9}'; }
user_of() { docker image inspect -f '{{.Config.User}}' "$1"; }
for i in slidead-cpu slidead-gpu; do
  [ "$(user_of $i)" = slidead ] || fail "$i does not run as the non-root user slidead"
done
[ "$(user_of slidead-catalog)" = postgres ] || fail "slidead-catalog does not run as the non-root user postgres"
step smoke-cpu "slidead-cpu cannot import torch/torchaudio or run slidead" \
  docker run --rm --network host slidead-cpu sh -c 'id -un && python -c "import torch, torchaudio, slidead; print(torch.__version__, torchaudio.__version__)" && slidead --help >/dev/null'
step smoke-gpu "slidead-gpu cannot import torch/torchaudio and slidead (on the CPU)" \
  docker run --rm --network host slidead-gpu python -c "import torch, torchaudio, slidead, flows.score; print(torch.__version__)"


# -- 4. the stack -----------------------------------------------------------------------
wait_http() {  # url seconds
  python3 - "$1" "$2" <<'EOF'
import sys, time, urllib.request
url, limit = sys.argv[1], float(sys.argv[2]); t0 = time.time()
while time.time() - t0 < limit:
    try:
        urllib.request.urlopen(url, timeout=5).read(); sys.exit(0)
    except Exception:
        time.sleep(1)
sys.exit(f"{url} did not answer within {limit:.0f} s")
EOF
}
wait_catalog() {
  for _ in $(seq 90); do
    compose exec -T catalog pg_isready -q -h 127.0.0.1 -p 5432 -U slidead -d results && return 0
    sleep 1
  done
  echo "the PostgreSQL catalog did not accept connections on 127.0.0.1:5432 within 90 s"; return 1
}
step stack-clean "a previous check's stack could not be removed" compose down -v --remove-orphans
docker rm -f "$READER" >/dev/null 2>&1
for port in 4200 5000 9000 5432; do
  python3 -c "import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $port)) != 0)" \
    && fail "something already listens on 127.0.0.1:$port, which the stack needs"
done
step stack-up "the stack did not start" compose up -d --no-build prefect minio catalog mlflow
stack_ready() {
  wait_http http://127.0.0.1:9000/ 60 && wait_catalog && wait_http http://127.0.0.1:4200/api/health 600 \
    && wait_http http://127.0.0.1:5000/health 600
}
step stack-ready "Prefect, S3, the PostgreSQL catalog or MLflow did not answer on 127.0.0.1" stack_ready
step buckets "the buckets could not be made on the S3 server" compose run --rm --no-deps minio-init
step workers-up "the CPU and GPU workers did not start" compose up -d --no-build --no-deps cpu-worker gpu-worker
networks=$(docker network ls --format '{{.Name}}' | grep -v -x -E 'host|none' || true)
[ -z "$networks" ] || fail "the stack created a network ($networks); everything here must use host networking"

pools() { wexec prefect work-pool create cpu --type process --overwrite && wexec prefect work-pool create gpu --type process --overwrite; }
step pools "the cpu and gpu work pools could not be created" pools
step deploy "prefect deploy --all failed" wexec prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml
# retrain/vae is declared on the gpu pool; the night B below needs the GPU worker to itself, so
# (as prefect.yaml says for such sites) train on the cpu pool with SLIDEAD_DEVICE=cpu.
step deploy-vae-cpu "redeploying retrain/vae on the cpu pool failed" wexec prefect --no-prompt deploy \
  --prefect-file deployments/prefect.yaml --name vae --pool cpu --job-variable '{"env": {"SLIDEAD_DEVICE": "cpu"}}'
if [ $HAVE_GPU = 0 ]; then  # score/nightly stays on the gpu pool, whose worker here runs on the CPU
  step deploy-nightly-cpu-device "redeploying score/nightly with SLIDEAD_DEVICE=cpu failed" wexec prefect --no-prompt \
    deploy --prefect-file deployments/prefect.yaml --name nightly --job-variable '{"env": {"SLIDEAD_DEVICE": "cpu"}}'
fi
step plant "slidead generate into the stack's bucket failed" wexec slidead generate --ids 00,02,04 --n-train 20 \
  --n-eval 6 --night-normal 0 --night-anomaly 0
# split conformal thresholds: one model (auto picks cross-conformal for so few clips: six)
step retrain "prefect deployment run retrain/vae did not complete" \
  wexec prefect deployment run retrain/vae -p epochs="$EPOCHS" -p thresholds=split --watch --watch-timeout 1800
step upload-nights "the two nights could not be generated and uploaded" wexec sh -c "
  SLIDEAD_STORE=/tmp/night-src slidead generate --ids 00,02,04 --n-train 0 --n-eval 0 --night $NIGHT --night $NIGHT_B \
    --night-normal 8 --night-anomaly 2 \
  && slidead upload-night /tmp/night-src/drops/$NIGHT --night $NIGHT \
  && slidead upload-night /tmp/night-src/drops/$NIGHT_B --night $NIGHT_B"
uploaded() { grep -oE "uploaded [0-9]+ clips.* as night $1" "$LOGS/upload-nights.log" | grep -oE '^uploaded [0-9]+' | grep -oE '[0-9]+' | tail -1; }
N_A=$(uploaded "$NIGHT"); N_B=$(uploaded "$NIGHT_B")
[ -n "$N_A" ] && [ "$N_A" -gt 0 ] && [ -n "$N_B" ] && [ "$N_B" -gt 0 ] || fail "upload-night uploaded no clips for one of the nights"

# -- 5. a reader held open while both nights load at once ---------------------------------
# The duckdb shell people are told to open (`slidead sql`, read-only), in a container of its
# own: it attaches the lake, says so with a file, then asks every second until told to stop.
READER_SH="
printf '.shell touch /tmp/attached\n'
while [ ! -e /tmp/stop ]; do
  printf \"SELECT 'poll', epoch_ms(now()) / 1000.0, (SELECT count(*) FROM scores WHERE night = DATE '$NIGHT'), (SELECT count(*) FROM scores WHERE night = DATE '$NIGHT_B');\n\"
  sleep 1
done
"
reader_start() {
  # a plain `docker run` of the worker's image with the worker's environment: compose v1's `run`
  # links the service's dependencies, which host networking refuses
  local worker; worker=$(compose ps -q cpu-worker) && [ -n "$worker" ] || { echo "no cpu-worker container"; return 1; }
  local envf; envf=$(mktemp) || return 1   # the worker's secrets: kept out of the logs, removed at once
  docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$worker" | grep -v '^$' >"$envf" \
    && docker run -d --name "$READER" --network host --env-file "$envf" \
      --entrypoint sh "$(docker inspect -f '{{.Config.Image}}' "$worker")" -c "( $READER_SH ) | slidead sql -- -csv -noheader"
  local rc=$?; rm -f "$envf"; [ $rc = 0 ] || return 1
  for _ in $(seq 120); do
    docker exec "$READER" test -e /tmp/attached 2>/dev/null && return 0
    [ "$(docker inspect -f '{{.State.Running}}' "$READER" 2>/dev/null)" = true ] || { docker logs "$READER"; echo "the reader exited"; return 1; }
    sleep 1
  done
  echo "the reader did not attach the lake within 120 s"; return 1
}
step reader-start "slidead sql could not attach the results lake in a third container" reader_start

night_a() { compose exec -T cpu-worker prefect deployment run score/nightly-cpu -p night="$NIGHT" --watch --watch-timeout 1800; }
night_b() { compose exec -T gpu-worker prefect deployment run score/nightly -p night="$NIGHT_B" --watch --watch-timeout 1800; }
nights_at_once() {
  local pa pb ra=0 rb=0
  night_a >"$LOGS/night-a.log" 2>&1 & pa=$!
  night_b >"$LOGS/night-b.log" 2>&1 & pb=$!
  wait $pa || ra=$?
  wait $pb || rb=$?
  [ $ra = 0 ] || { tail -n 15 "$LOGS/night-a.log"; echo "night $NIGHT on the CPU worker (score/nightly-cpu) did not complete"; }
  [ $rb = 0 ] || { tail -n 15 "$LOGS/night-b.log"; echo "night $NIGHT_B on the GPU worker (score/nightly) did not complete"; }
  [ $ra = 0 ] && [ $rb = 0 ]
}
step nights "the two nights scored at once on two workers did not both complete" nights_at_once

reader_stop() {
  docker exec "$READER" touch /tmp/stop || return 1
  timeout 120 docker wait "$READER" >/dev/null || { echo "the reader did not stop within 120 s"; return 1; }
  docker logs "$READER" >"$LOGS/reader.out" 2>&1
  docker rm -f "$READER" >/dev/null
  cat "$LOGS/reader.out"
}
step reader-stop "the reader container did not stop cleanly" reader_stop

# -- 6. checks --------------------------------------------------------------------------
# the two flow runs, from the Prefect API: which pool ran each, when, how long
flow_runs() {
  python3 - "$LOGS/flow-runs.json" <<'EOF'
import json, sys, urllib.request
out = {}
for dep in ("nightly-cpu", "nightly", "vae"):
    body = json.dumps({"deployments": {"name": {"any_": [dep]}}, "flow_runs": {"start_time": {"is_null_": False}},
                       "sort": "START_TIME_DESC", "limit": 1}).encode()
    req = urllib.request.Request("http://127.0.0.1:4200/api/flow_runs/filter", body, {"Content-Type": "application/json"})
    runs = json.load(urllib.request.urlopen(req, timeout=10))
    if not runs:
        sys.exit(f"no started flow run of deployment {dep}")
    r = runs[0]
    out[dep] = {k: r.get(k) for k in ("start_time", "end_time", "state_name", "total_run_time", "work_pool_name")}
    print(dep, out[dep])
json.dump(out, open(sys.argv[1], "w"))
EOF
}
step flow-runs "the flow runs could not be read from the Prefect API" flow_runs

# from a fresh container (no worker running): the results lake as a newcomer would count it
step workers-stop "the workers did not stop" compose stop cpu-worker gpu-worker
step lake "the two nights' rows did not land once each in the results lake" compose run --rm --no-deps -T cpu-worker python -c "
import os, sys, boto3
from slidead.settings import Settings
from slidead.store.results import KEYS, is_postgres
from slidead.store.services import results_db
s = Settings()
db = results_db(s)
problems = []
if not is_postgres(db.catalog):
    problems.append(f'the catalog is {db.catalog}, not the PostgreSQL service')
if os.path.exists('/data/slidead.ducklake'):
    problems.append('a SQLite catalog appeared in the worker volume')
expect = {'$NIGHT': $N_A, '$NIGHT_B': $N_B}
for night, n in expect.items():
    ledger = db.night_ledger_counts(night)
    arrivals = sum(m['arrivals'] for m in ledger.values())
    scored = sum(m['scored'] for m in ledger.values())
    dups = sum(m['duplicates'] for m in ledger.values())
    rejected = sum(m['rejected'] for m in ledger.values())
    _, [(rows, distinct, ids)] = db.query('SELECT count(*), count(DISTINCT (clip_id, model_name, model_version)), count(DISTINCT machine_id) FROM scores WHERE night = ?::DATE', [night])
    _, runs = db.query(\"SELECT status, flow FROM runs WHERE night = ?::DATE ORDER BY started_at DESC LIMIT 1\", [night])
    print(f'night {night}: {n} uploaded, ledger {arrivals} arrivals = {scored} scored + {dups} duplicates + {rejected} rejected; scores {rows} rows of {ids} machine ids; run {runs[0] if runs else None}')
    if arrivals != n or arrivals != scored + dups + rejected:
        problems.append(f'night {night}: {arrivals} arrivals in the ledger for {n} uploaded, {scored} + {dups} + {rejected} accounted for')
    if rows != scored or rows != distinct or scored == 0 or ids != 3:
        problems.append(f'night {night}: {rows} score rows ({distinct} distinct) for {scored} scored arrivals of 3 machine ids')
    if not runs or runs[0][0] != 'completed':
        problems.append(f'night {night}: no completed run')
for table, keys in KEYS.items():
    _, dup = db.query(f\"SELECT count(*) FROM (SELECT {', '.join(keys)} FROM {table} GROUP BY ALL HAVING count(*) > 1)\")
    if dup[0][0]:
        problems.append(f'{table}: {dup[0][0]} keys with more than one row')
with db.connect(read_only=True) as con:
    files = con.execute(\"SELECT count(*), count(*) FILTER (WHERE data_file LIKE 's3://%') FROM ducklake_list_files('lake', 'scores')\").fetchone()
    snaps = [r[0] for r in con.execute(\"SELECT epoch_ms(snapshot_time) / 1000.0 FROM ducklake_snapshots('lake') ORDER BY 1\").fetchall()]
bucket, _, prefix = db.data_path.removeprefix('s3://').partition('/')
s3 = boto3.client('s3', endpoint_url=s.s3_endpoint)
objects = sum(p.get('KeyCount', 0) for p in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix))
print(f'lake: catalog {db.shown}, data {db.data_path}: {objects} objects in the bucket; scores in {files[0]} data files ({files[1]} on S3); {len(snaps)} snapshots')
if objects == 0 or files[0] != files[1]:
    problems.append(f'the lake keeps its data files outside the bucket ({objects} objects under {db.data_path})')
print('SNAPSHOTS', ' '.join(f'{t:.3f}' for t in snaps))
if problems:
    sys.exit('; '.join(problems))
"
# the reader against the flow runs: attached before both began, still attached after both
# ended, never held up (its polls kept coming) and it saw both nights' rows on its next query
at_once() {
  python3 - "$LOGS/flow-runs.json" "$LOGS/reader.out" "$LOGS/lake.log" "$NIGHT" "$NIGHT_B" <<'EOF'
import csv, datetime as dt, json, sys
runs, reader_out, lake_log, night_a, night_b = sys.argv[1:6]
runs = json.load(open(runs))
t = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
a, b = runs["nightly-cpu"], runs["nightly"]
problems = []
for name, r, pool in ((night_a, a, "cpu"), (night_b, b, "gpu")):
    if r["state_name"] != "Completed" or r["work_pool_name"] != pool:
        problems.append(f"night {name}: flow run {r['state_name']} on pool {r['work_pool_name']}, expected Completed on {pool}")
overlap = min(t(a["end_time"]), t(b["end_time"])) - max(t(a["start_time"]), t(b["start_time"]))
print(f"flow runs: night {night_a} on pool {a['work_pool_name']} {a['total_run_time']:.1f} s, night {night_b} on pool "
      f"{b['work_pool_name']} {b['total_run_time']:.1f} s; they ran at the same time for {overlap:.1f} s")
if overlap <= 0:
    problems.append(f"the two nights did not run at once (they were {-overlap:.1f} s apart)")
polls = [row for row in csv.reader(open(reader_out)) if row and row[0] == "poll"]
errors = [l for l in open(reader_out) if "Error" in l]
if errors:
    problems.append(f"the reader met errors: {errors[0].strip()}")
if len(polls) < 2:
    sys.exit("; ".join(problems + [f"the reader answered {len(polls)} queries"]))
times = [float(p[1]) for p in polls]
gap = max(y - x for x, y in zip(times, times[1:]))
first, last = polls[0], polls[-1]
start, end = min(t(a["start_time"]), t(b["start_time"])), max(t(a["end_time"]), t(b["end_time"]))
snaps = [float(x) for line in open(lake_log) if line.startswith("SNAPSHOTS") for x in line.split()[1:]]
during = sum(1 for x in snaps if times[0] < x < times[-1])
print(f"reader (slidead sql, third container): {len(polls)} queries over {times[-1] - times[0]:.0f} s, longest gap "
      f"{gap:.1f} s; scores seen {first[2]}+{first[3]} at first, {last[2]}+{last[3]} at last; {during} snapshots "
      f"committed while it was attached")
if not (times[0] < start and times[-1] > end):
    problems.append("the reader was not attached for the whole of both loads")
if int(first[2]) + int(first[3]) != 0 or int(last[2]) == 0 or int(last[3]) == 0:
    problems.append("the reader did not see both nights' rows arrive")
if gap > 30:
    problems.append(f"the reader waited {gap:.0f} s for one answer")
if during == 0:
    problems.append("no snapshot was committed while the reader was attached")
if problems:
    sys.exit("; ".join(problems))
EOF
}
step at-once "the nights did not load at once beside an open reader" at_once
step champion "MLflow's REST API has no champion for slidead-slider-vae" python3 -c "
import json, urllib.request
u = 'http://127.0.0.1:5000/api/2.0/mlflow/registered-models/alias?name=slidead-slider-vae&alias=champion'
mv = json.load(urllib.request.urlopen(u, timeout=10))['model_version']
print('champion slidead-slider-vae v' + mv['version'], 'run', mv['run_id'], 'source', mv.get('source'))
assert mv['status'] == 'READY', mv['status']
"
step report "slidead report failed on the results lake" compose run --rm --no-deps -T cpu-worker slidead report --night "$NIGHT_B" --only nightly_summary

# -- figures ----------------------------------------------------------------------------
run_time() { python3 -c "import json, sys; r = json.load(open(sys.argv[1]))[sys.argv[2]]; print(f\"{r['total_run_time']:.1f} s ({r['state_name']})\")" "$LOGS/flow-runs.json" "$1"; }
say "PASSED. Figures (this host: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)):"
printf '  %-46s %s\n' \
  "base image $SLIDEAD_BASE" "$(size "$SLIDEAD_BASE")${FIG[base]:+, made in ${FIG[base]} s}" \
  "build slidead-cpu" "${FIG[build-cpu]} s, $(size slidead-cpu) (user $(user_of slidead-cpu))" \
  "build slidead-gpu (base $SLIDEAD_GPU_BASE)" "${FIG[build-gpu]} s, $(size slidead-gpu) (user $(user_of slidead-gpu))" \
  "build slidead-stack" "${FIG[build-stack]} s, $(size slidead-stack)" \
  "build slidead-catalog" "${FIG[build-catalog]} s, $(size slidead-catalog) (user $(user_of slidead-catalog))" \
  "stack up until it answers (with the catalog)" "$(( FIG[stack-up] + FIG[stack-ready] )) s" \
  "deploy (all, vae on cpu, nightly's device)" "$(( FIG[deploy] + FIG[deploy-vae-cpu] + ${FIG[deploy-nightly-cpu-device]:-0} )) s" \
  "retrain/vae, $EPOCHS epochs" "${FIG[retrain]} s wall (flow run itself: $(run_time vae))" \
  "nights $NIGHT + $NIGHT_B: $N_A + $N_B clips uploaded" "${FIG[upload-nights]} s" \
  "reader attached (slidead sql, third container)" "${FIG[reader-start]} s" \
  "both nights at once, --watch" "${FIG[nights]} s wall (flow runs: $(run_time nightly-cpu), $(run_time nightly))"
grep -v -e '^Creating' -e '^$' -e '^SNAPSHOTS' "$LOGS/lake.log" "$LOGS/at-once.log" "$LOGS/champion.log" | sed 's/^[^:]*:/  /'
PASSED=1

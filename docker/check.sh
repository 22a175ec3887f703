#!/usr/bin/env bash
# make docker-check: build the images and run a night through the compose stack, for real.
#
#  1. a Docker engine: the one that answers (DOCKER_HOST or the default socket), else start
#     dockerd with its own socket and folders under $SLIDEAD_DOCKER_ROOT (no bridge, no
#     iptables; stopped again at the end). Installs Debian's docker.io, docker-compose and
#     debootstrap first when they are missing (root only).
#  2. a base: python:3.11-slim when it can be pulled, else docker/local-base.sh's Debian image.
#  3. builds slidead-cpu, slidead-gpu (on the same CUDA-less base when nvidia/cuda cannot be
#     pulled; built, not run) and slidead-stack (the S3 stand-in's image).
#  4. compose.yaml + compose.local.yaml: Prefect server, S3 (moto), bucket init, MLflow, a CPU
#     worker; inside the worker container: prefect deploy --all, retrain/vae (3 epochs), a
#     small night generated and uploaded to the bucket, score/nightly-cpu for that night.
#  5. checks the night's scores in the results lake (from a fresh container) and
#     the champion through MLflow's REST API; prints the figures; tears everything down.
# Exits non-zero with one sentence on the first failure. Logs: $SLIDEAD_DOCKER_LOGS.
set -uo pipefail
cd "$(dirname "$0")/.."

ROOT=${SLIDEAD_DOCKER_ROOT:-/var/tmp/slidead-docker}     # own dockerd's data, exec root and socket
LOGS=${SLIDEAD_DOCKER_LOGS:-$ROOT/logs}
NIGHT=${SLIDEAD_CHECK_NIGHT:-2026-11-23}
EPOCHS=${SLIDEAD_CHECK_EPOCHS:-3}
PROJECT=slidead-check
mkdir -p "$LOGS"
T_START=$(date +%s)
STARTED_DOCKERD=0
REASON=""
declare -A FIG

say() { printf 'docker-check: %s\n' "$*"; }
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
      for s in prefect minio mlflow cpu-worker; do compose logs --no-color --tail 200 "$s" >"$LOGS/service-$s.log" 2>&1; done
    fi
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
if [ "$COMPOSE" = docker-compose ]; then
  # Compose v1 (docker-py) refuses the ports compose.yaml publishes once a service uses host
  # networking (the engine would just discard them) and cannot reset a list from an override:
  # render both files into one and drop `ports` from the host-networked services.
  render_compose() {
    compose config | python3 -c '
import sys, yaml
cfg = yaml.safe_load(sys.stdin)
for svc in cfg["services"].values():
    if svc.get("network_mode") == "host":
        svc.pop("ports", None)
yaml.safe_dump(cfg, sys.stdout, sort_keys=False)' >"$LOGS/compose.check.yaml"
  }
  step compose-config "compose.yaml with compose.local.yaml does not render" render_compose
  COMPOSE_FILES=(-f "$LOGS/compose.check.yaml")
fi

# -- 3. images --------------------------------------------------------------------------
build() { docker build --network host "$@" .; }
step build-cpu "docker build of slidead-cpu failed" build -f docker/Dockerfile.cpu --build-arg BASE="$SLIDEAD_BASE" -t slidead-cpu
step build-gpu "docker build of slidead-gpu failed" build -f docker/Dockerfile.gpu --build-arg BASE="$SLIDEAD_GPU_BASE" -t slidead-gpu
step build-stack "docker build of slidead-stack failed" build -f docker/Dockerfile.stack -t slidead-stack
size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.2f GB", $1/1e9}'; }
user_of() { docker image inspect -f '{{.Config.User}}' "$1"; }
for i in slidead-cpu slidead-gpu; do
  [ "$(user_of $i)" = slidead ] || fail "$i does not run as the non-root user slidead"
done
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
step stack-clean "a previous check's stack could not be removed" compose down -v --remove-orphans
for port in 4200 5000 9000; do
  python3 -c "import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $port)) != 0)" \
    && fail "something already listens on 127.0.0.1:$port, which the stack needs"
done
step stack-up "the stack did not start" compose up -d --no-build prefect minio mlflow
stack_ready() {
  wait_http http://127.0.0.1:9000/ 60 && wait_http http://127.0.0.1:4200/api/health 180 \
    && wait_http http://127.0.0.1:5000/health 120
}
step stack-ready "Prefect, S3 or MLflow did not answer on 127.0.0.1" stack_ready
step buckets "the buckets could not be made on the S3 server" compose run --rm --no-deps minio-init
step worker-up "the CPU worker did not start" compose up -d --no-build --no-deps cpu-worker
networks=$(docker network ls --format '{{.Name}}' | grep -v -x -E 'host|none' || true)
[ -z "$networks" ] || fail "the stack created a network ($networks); everything here must use host networking"

pools() { wexec prefect work-pool create cpu --type process --overwrite && wexec prefect work-pool create gpu --type process --overwrite; }
step pools "the cpu and gpu work pools could not be created" pools
step deploy "prefect deploy --all failed" wexec prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml
# retrain/vae is declared on the gpu pool; this host has no GPU worker, so (as prefect.yaml
# says for such sites) point it at the cpu pool with SLIDEAD_DEVICE=cpu.
step deploy-vae-cpu "redeploying retrain/vae on the cpu pool failed" wexec prefect --no-prompt deploy \
  --prefect-file deployments/prefect.yaml --name vae --pool cpu --job-variable '{"env": {"SLIDEAD_DEVICE": "cpu"}}'
step plant "slidead generate into the stack's bucket failed" wexec slidead generate --ids 00,02,04 --n-train 20 \
  --n-eval 6 --night-normal 0 --night-anomaly 0
step retrain "prefect deployment run retrain/vae did not complete" \
  wexec prefect deployment run retrain/vae -p epochs="$EPOCHS" --watch --watch-timeout 1800
step upload-night "the night could not be generated and uploaded" wexec sh -c "
  SLIDEAD_STORE=/tmp/night-src slidead generate --ids 00,02,04 --n-train 0 --n-eval 0 --night $NIGHT \
    --night-normal 8 --night-anomaly 2 && slidead upload-night /tmp/night-src/drops/$NIGHT --night $NIGHT"
N_UPLOADED=$(grep -oE 'uploaded [0-9]+ clips' "$LOGS/upload-night.log" | grep -oE '[0-9]+' | tail -1)
[ -n "$N_UPLOADED" ] && [ "$N_UPLOADED" -gt 0 ] || fail "upload-night uploaded no clips"
step night "prefect deployment run score/nightly-cpu did not complete" \
  wexec prefect deployment run score/nightly-cpu -p night="$NIGHT" --watch --watch-timeout 1800

# -- 5. checks --------------------------------------------------------------------------
# the flow runs' own durations, from the Prefect API
flow_run_time() {  # deployment name -> "12.3 s (Completed)" of its latest started run
  python3 - "$1" <<'EOF'
import json, sys, urllib.request
body = json.dumps({"deployments": {"name": {"any_": [sys.argv[1]]}}, "flow_runs": {"start_time": {"is_null_": False}},
                   "sort": "START_TIME_DESC", "limit": 1}).encode()
req = urllib.request.Request("http://127.0.0.1:4200/api/flow_runs/filter", body, {"Content-Type": "application/json"})
run = json.load(urllib.request.urlopen(req, timeout=10))[0]
print(f"{run['total_run_time']:.1f} s ({run['state_name']})")
EOF
}
NIGHT_RUN_S=$(flow_run_time nightly-cpu) || fail "the score flow run could not be read from the Prefect API"
RETRAIN_RUN_S=$(flow_run_time vae) || fail "the retrain flow run could not be read from the Prefect API"
# the worker is stopped first: a fresh container reads the results lake (catalog on the results
# volume, data files in the bucket)
step worker-stop "the CPU worker did not stop" compose stop cpu-worker
step duckdb "the night's scores are not in the results lake" compose run --rm --no-deps -T cpu-worker python -c "
import sys
from slidead.settings import Settings
from slidead.store.services import results_db
cm = results_db(Settings()).connect(read_only=True)
con = cm.__enter__()
n, ids, flagged, models = con.execute(
    \"SELECT count(*), count(DISTINCT machine_id), count(*) FILTER (WHERE is_anomaly), string_agg(DISTINCT model_name || ' v' || model_version, ', ') FROM scores WHERE night = ?::DATE\",
    ['$NIGHT']).fetchone()
status = con.execute(\"SELECT status FROM runs WHERE night = ?::DATE ORDER BY started_at DESC LIMIT 1\", ['$NIGHT']).fetchone()
print(f'scores {n} clips, {ids} machine ids, {flagged} flagged, models {models}; run status {status[0] if status else None}')
if n != $N_UPLOADED or ids != 3 or not status or status[0] != 'completed':
    sys.exit(f'expected $N_UPLOADED scored clips of 3 machine ids and a completed run')
"
step champion "MLflow's REST API has no champion for slidead-slider-vae" python3 -c "
import json, urllib.request
u = 'http://127.0.0.1:5000/api/2.0/mlflow/registered-models/alias?name=slidead-slider-vae&alias=champion'
mv = json.load(urllib.request.urlopen(u, timeout=10))['model_version']
print('champion slidead-slider-vae v' + mv['version'], 'run', mv['run_id'], 'source', mv.get('source'))
assert mv['status'] == 'READY', mv['status']
"
step report "slidead report failed on the results volume" compose run --rm --no-deps -T cpu-worker slidead report --night "$NIGHT" --only nightly_summary

# -- figures ----------------------------------------------------------------------------
say "PASSED. Figures (this host: $(nproc) cores):"
printf '  %-44s %s\n' \
  "base image $SLIDEAD_BASE" "$(size "$SLIDEAD_BASE")${FIG[base]:+, made in ${FIG[base]} s}" \
  "build slidead-cpu" "${FIG[build-cpu]} s, $(size slidead-cpu) (user $(user_of slidead-cpu))" \
  "build slidead-gpu (base $SLIDEAD_GPU_BASE)" "${FIG[build-gpu]} s, $(size slidead-gpu) (user $(user_of slidead-gpu))" \
  "build slidead-stack" "${FIG[build-stack]} s, $(size slidead-stack)" \
  "stack up until it answers" "$(( FIG[stack-up] + FIG[stack-ready] )) s" \
  "deploy (all + vae on cpu)" "$(( FIG[deploy] + FIG[deploy-vae-cpu] )) s" \
  "retrain/vae, $EPOCHS epochs" "${FIG[retrain]} s wall (flow run itself: $RETRAIN_RUN_S)" \
  "night $NIGHT: $N_UPLOADED clips uploaded" "${FIG[upload-night]} s" \
  "night $NIGHT: score/nightly-cpu --watch" "${FIG[night]} s wall (flow run itself: $NIGHT_RUN_S)"
grep -v -e '^Creating' -e '^$' "$LOGS/duckdb.log" "$LOGS/champion.log" | sed 's/^[^:]*:/  /'
PASSED=1

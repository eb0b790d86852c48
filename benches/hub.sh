#!/usr/bin/env bash
# labforge hub benchmarks: the "Hub" figures in docs/benchmarks.md.
#
# Usage (as root, from anywhere):  bash benches/hub.sh
#
# Part 1, throughput. A generated catalog of BENCH_HUB_IMAGES concrete images,
# every one published: benches/hub-setup.py pushes one tiny image per catalog
# image to REGISTRY/bench-hub/img (the busybox stand-in's layers, mounted, and
# a config of its own: a digest per image; the same on every run) and writes
# a passing, published scan row per digest into a fresh SQLite state store.
# `labforge serve` (release build) serves it; nginx serves the exact bytes of the hub's
# responses as static files. wrk (2 threads, 64 connections, --latency)
# runs against both, alternating nginx / labforge, BENCH_HUB_ROUNDS rounds of
# BENCH_HUB_SECONDS each for the full JSON list (the median is reported),
# then one round each for ?format=yaml and a filtered list (?user=&group=).
# Then the hub's peak RSS (VmHWM).
#
# Part 2, consistency. benches/hub-consistency.py opens BENCH_HUB_READERS
# keep-alive connections that read the profile list over and over while the
# catalog is republished BENCH_HUB_REPUBLISHES times through
# POST /api/v1/images/NAME/rollback; every body must match its ETag and be a
# document the hub published. Zero failures are required.
#
# Needs: the local registry with the stand-ins (scripts/services.sh), skopeo,
# python3, curl, cargo; installs wrk and nginx (Debian packages) if missing.
#
# Environment (defaults in brackets):
#   BENCH_HUB_IMAGES       concrete images / profiles          [200]
#   BENCH_HUB_SECONDS      seconds per wrk run                 [15]
#   BENCH_HUB_ROUNDS       wrk rounds per server, full list    [3]
#   BENCH_HUB_READERS      concurrent readers in part 2        [1000]
#   BENCH_HUB_REPUBLISHES  republishes in part 2               [100]
#   BENCH_HUB_PARTS        "1 2", "1" or "2"                   [1 2]
#   BENCH_KEEP             1 = keep the work folder            [0]
#   CARGO_TARGET_DIR       where cargo builds                  [REPO/target]
#   LABFORGE_TEST_REGISTRY registry host:port                  [127.0.0.1:5000]
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
readonly N="${BENCH_HUB_IMAGES:-200}"
readonly SECONDS_PER_RUN="${BENCH_HUB_SECONDS:-15}"
readonly ROUNDS="${BENCH_HUB_ROUNDS:-3}"
readonly READERS="${BENCH_HUB_READERS:-1000}"
readonly REPUBLISHES="${BENCH_HUB_REPUBLISHES:-100}"
readonly PARTS="${BENCH_HUB_PARTS:-1 2}"
readonly REGISTRY="${LABFORGE_TEST_REGISTRY:-127.0.0.1:5000}"
readonly STANDIN=standin/busybox:latest
readonly BENCH_REPO=bench-hub/img
readonly BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/labforge"
readonly WRK=(wrk --threads 2 --connections 64 --latency --timeout 5s)

log() { printf '[hub-bench] %s\n' "$*" >&2; }
die() { printf '[hub-bench] FAILED: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------
apt_install() { # package...
    [[ $EUID -eq 0 ]] || die "need root to apt-get install $*"
    log "installing Debian package(s): $*"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; then
        apt-get update >/dev/null 2>&1 || die "apt-get update failed"
        apt-get install -y --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
    fi
}
command -v wrk >/dev/null || apt_install wrk
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || apt_install nginx
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
readonly NGINX
for tool in skopeo python3 curl cargo; do
    command -v "$tool" >/dev/null || die "$tool is not installed (skopeo: bash scripts/services.sh)"
done
# 1,000 client connections plus the hub's own: raise the open-file limit for
# this shell and everything it starts.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ---------------------------------------------------------------------------
# Work folder, clean-up
# ---------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/labforge-hub-bench.XXXXXX")
readonly WORK
# nginx's workers run as nobody: they must reach the files it serves.
chmod 755 "$WORK"
HUB_PID=""
NGINX_PID=""
cleanup() {
    local rc=$?
    [[ -n "$HUB_PID" ]] && kill "$HUB_PID" 2>/dev/null && wait "$HUB_PID" 2>/dev/null
    [[ -n "$NGINX_PID" ]] && kill -QUIT "$NGINX_PID" 2>/dev/null
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
SUMMARY="$WORK/summary.txt"
: >"$SUMMARY"
say() { printf '%s\n' "$*" | tee -a "$SUMMARY" >&2; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------
# Build, catalog, state
# ---------------------------------------------------------------------------
log "building the release binary (cargo build --release --bin labforge)"
(cd "$REPO_ROOT" && cargo build --release --quiet --bin labforge) || die "cargo build --release failed"
[[ -x "$BIN" ]] || die "no $BIN after the build"

PROJECT="$WORK/project"
# Lab profiles are limited to [course-<topic>, ki-cluster-admins]; the
# foundation ones are public. The full list is what a member of the staff
# group gets (as JupyterHub asks: ?user=&group=); anonymous requests get the
# public profiles only.
readonly STAFF_GROUP=ki-cluster-admins
FULL_QUERY="user=bench-admin&group=$STAFF_GROUP"
log "generating a $N-image catalog into $PROJECT"
python3 "$REPO_ROOT/benches/generate-catalog.py" "$PROJECT" --images "$N" >&2
cat >"$PROJECT/labforge.toml" <<EOF
catalog = "catalog"
dockerfiles = "dockerfiles"
state = "state"
registry = "$REGISTRY/bench-hub"

[hub]
staff_groups = ["$STAFF_GROUP"]
EOF
cd "$PROJECT"
"$BIN" validate --json >"$WORK/images.json" || die "the generated catalog does not pass labforge validate"
got=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["images"]))' "$WORK/images.json")
[[ "$got" == "$N" ]] || die "the generated catalog has $got images, expected $N"

# The group with the most profiles: the filtered readers ask as a member.
GROUP=$(python3 - "$WORK/images.json" <<'EOF'
import collections, json, sys
images = json.load(open(sys.argv[1]))["images"]
count = collections.Counter(g for i in images for g in (i.get("profile") or {}).get("groups") or [] if g.startswith("course-"))
print(count.most_common(1)[0][0] if count else "course-none")
EOF
)
readonly GROUP

if ! curl -fsS --max-time 5 -o /dev/null "http://$REGISTRY/v2/"; then
    log "registry at $REGISTRY not answering; running scripts/services.sh"
    bash "$REPO_ROOT/scripts/services.sh" >&2 || die "scripts/services.sh failed"
fi
skopeo inspect --raw --tls-verify=false "docker://$REGISTRY/$STANDIN" >/dev/null \
    || die "$REGISTRY/$STANDIN missing (bash scripts/services.sh pushes it)"

STATE="$PROJECT/state"
"$BIN" status --state "$STATE" >/dev/null 2>&1 || true
[[ -f "$STATE/state.db" ]] || die "labforge status did not create $STATE/state.db"
log "pushing one tiny image per catalog image (plus 50 second versions) to $REGISTRY/$BENCH_REPO"
python3 "$REPO_ROOT/benches/hub-setup.py" "$STATE/state.db" "$WORK/images.json" \
    --registry "$REGISTRY" --from "$STANDIN" --to "$BENCH_REPO" --toggle 50 >"$WORK/toggle.json" \
    || die "benches/hub-setup.py failed"

# ---------------------------------------------------------------------------
# The hub
# ---------------------------------------------------------------------------
LABFORGE_HUB_ADMIN_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export LABFORGE_HUB_ADMIN_TOKEN
log "starting labforge serve"
LABFORGE_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --state "$STATE" --refresh 3600 \
    >"$WORK/hub.out" 2>"$WORK/hub.err" &
HUB_PID=$!
HUB=""
for _ in $(seq 1 300); do
    HUB=$(sed -n 's/^labforge hub listening on //p' "$WORK/hub.out" 2>/dev/null | head -n 1)
    [[ -n "$HUB" ]] && break
    kill -0 "$HUB_PID" 2>/dev/null || { cat "$WORK/hub.err" >&2; die "labforge serve exited"; }
    sleep 0.1
done
[[ -n "$HUB" ]] || die "labforge serve did not print its address"
for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$HUB/readyz" 2>/dev/null && break
    sleep 0.1
done
curl -fsS "$HUB/readyz" >"$WORK/readyz.json" || { cat "$WORK/hub.err" >&2; die "the hub is not ready: $(curl -sS "$HUB/readyz")"; }
log "hub ready at $HUB: $(cat "$WORK/readyz.json")"

# The exact bytes the hub serves, for nginx.
SITE="$WORK/site"
mkdir -p "$SITE"
chmod 755 "$SITE"
FILTER_QUERY="user=bench-user&group=$GROUP"
curl -fsS "$HUB/api/v1/profiles?$FULL_QUERY" -o "$SITE/profiles.json"
curl -fsS "$HUB/api/v1/profiles?$FULL_QUERY&format=yaml" -o "$SITE/profiles.yaml"
curl -fsS "$HUB/api/v1/profiles?$FILTER_QUERY" -o "$SITE/filtered.json"
curl -fsS "$HUB/api/v1/profiles" -o "$SITE/public.json"
count() { python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$1"; }
profiles=$(count "$SITE/profiles.json")
filtered=$(count "$SITE/filtered.json")
public=$(count "$SITE/public.json")
[[ "$profiles" == "$N" ]] || die "the hub serves $profiles profiles, expected $N (readyz: $(cat "$WORK/readyz.json"))"
size() { stat -c %s "$1"; }

commit=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null | wc -l)
say "labforge hub benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
say "  machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -h | awk '/^Mem:/ {print $2}') RAM, $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg)"
say "  labforge: $commit (+$dirty uncommitted paths), $("$BIN" --version); $(nginx -v 2>&1); $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
say "  catalog: $N images; full list (?$FULL_QUERY): $profiles profiles, JSON $(size "$SITE/profiles.json") bytes, YAML $(size "$SITE/profiles.yaml") bytes"
say "  filtered (?$FILTER_QUERY): $filtered profiles, $(size "$SITE/filtered.json") bytes; anonymous (no query): $public public profiles, $(size "$SITE/public.json") bytes"
say ""

# ---------------------------------------------------------------------------
# Part 1: wrk, labforge beside nginx
# ---------------------------------------------------------------------------
# cpu_ticks PID...: user + system CPU time of the processes (all threads), in clock ticks.
cpu_ticks() {
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
# wrk_run NAME URL PID...: one wrk run against URL served by the PIDs; prints
# "REQS P50_MS P99_MS ERRORS CPU_US_PER_REQUEST" and keeps wrk's output.
wrk_run() {
    local name=$1 url=$2 out="$WORK/wrk-$1.txt" before after
    shift 2
    before=$(cpu_ticks "$@")
    "${WRK[@]}" --duration "${SECONDS_PER_RUN}s" "$url" >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
    after=$(cpu_ticks "$@")
    python3 - "$out" "$((after - before))" "$(getconf CLK_TCK)" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
def ms(value):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]
reqs = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
total = int(re.search(r"(\d+) requests in", text).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
errors = 0
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
if m:
    errors += sum(int(x) for x in m.groups())
m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if m:
    errors += int(m.group(1))
cpu_us = int(sys.argv[2]) / int(sys.argv[3]) * 1e6 / max(total, 1)
print(f"{reqs:.0f} {p50:.2f} {p99:.2f} {errors} {cpu_us:.0f}")
EOF
}

if [[ " $PARTS " == *" 1 "* ]]; then
    NGINX_PORT=$(free_port)
    NGINX_COPY_PORT=$(free_port)
    mkdir -p "$WORK/nginx/logs"
    cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    keepalive_timeout 65;
    types { application/json json; application/yaml yaml; }
    default_type application/json;
    client_body_temp_path $WORK/nginx/tmp;
    proxy_temp_path $WORK/nginx/tmp;
    fastcgi_temp_path $WORK/nginx/tmp;
    uwsgi_temp_path $WORK/nginx/tmp;
    scgi_temp_path $WORK/nginx/tmp;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $SITE;
    }
    # The same files without sendfile: nginx copies them through user space
    # into the socket, as the hub copies its in-memory bodies.
    server {
        listen 127.0.0.1:$NGINX_COPY_PORT;
        root $SITE;
        sendfile off;
    }
}
EOF
    mkdir -p "$WORK/nginx/tmp"
    NGINX_ARGS=(-c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -e "$WORK/nginx/logs/error.log")
    "$NGINX" -t "${NGINX_ARGS[@]}" >/dev/null 2>&1 || die "nginx -t: $("$NGINX" -t "${NGINX_ARGS[@]}" 2>&1)"
    "$NGINX" "${NGINX_ARGS[@]}"
    for _ in $(seq 1 50); do [[ -s "$WORK/nginx/nginx.pid" ]] && break; sleep 0.1; done
    NGINX_PID=$(cat "$WORK/nginx/nginx.pid")
    PEER="http://127.0.0.1:$NGINX_PORT"
    PEER_COPY="http://127.0.0.1:$NGINX_COPY_PORT"
    cmp -s <(curl -fsS "$PEER/profiles.json") "$SITE/profiles.json" || die "nginx does not serve the same bytes"

    log "warming up both servers (3 s each)"
    wrk --threads 2 --connections 64 --duration 3s "$PEER/profiles.json" >/dev/null
    wrk --threads 2 --connections 64 --duration 3s "$HUB/api/v1/profiles?$FULL_QUERY" >/dev/null

    declare -a NG_REQ=() LF_REQ=()
    declare -A ROW=()
    say "wrk: 2 threads, 64 connections, ${SECONDS_PER_RUN} s per run, --latency; alternating"
    mapfile -t NGINX_PIDS < <(echo "$NGINX_PID"; pgrep -P "$NGINX_PID")
    say "$(printf '  %-34s %10s %8s %8s %7s %12s' 'run' 'req/s' 'p50 ms' 'p99 ms' 'errors' 'CPU us/req')"
    for round in $(seq 1 "$ROUNDS"); do
        for side in nginx labforge; do
            if [[ $side == nginx ]]; then
                r=$(wrk_run "nginx-json-$round" "$PEER/profiles.json" "${NGINX_PIDS[@]}")
                NG_REQ+=("$r")
            else
                r=$(wrk_run "labforge-json-$round" "$HUB/api/v1/profiles?$FULL_QUERY" "$HUB_PID")
                LF_REQ+=("$r")
            fi
            read -r q p50 p99 e cpu <<<"$r"
            say "$(printf '  %-34s %10s %8s %8s %7s %12s' "$side full list #$round" "$q" "$p50" "$p99" "$e" "$cpu")"
        done
    done
    for pair in "nginx-full-sendfile-off|$PEER_COPY/profiles.json" "labforge-yaml|$HUB/api/v1/profiles?$FULL_QUERY&format=yaml" "nginx-yaml|$PEER/profiles.yaml" \
        "labforge-filtered|$HUB/api/v1/profiles?$FILTER_QUERY" "nginx-filtered|$PEER/filtered.json"; do
        name=${pair%%|*}
        url=${pair#*|}
        if [[ $name == labforge* ]]; then
            ROW[$name]=$(wrk_run "$name" "$url" "$HUB_PID")
        else
            ROW[$name]=$(wrk_run "$name" "$url" "${NGINX_PIDS[@]}")
        fi
        read -r q p50 p99 e cpu <<<"${ROW[$name]}"
        say "$(printf '  %-34s %10s %8s %8s %7s %12s' "$name" "$q" "$p50" "$p99" "$e" "$cpu")"
    done

    # Medians of the full-list rounds (by req/s); p99 of the same run.
    median_of() { printf '%s\n' "$@" | sort -n -k1,1 | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'; }
    read -r ng_q _ ng_p99 _ ng_cpu <<<"$(median_of "${NG_REQ[@]}")"
    read -r lf_q _ lf_p99 _ lf_cpu <<<"$(median_of "${LF_REQ[@]}")"
    worst_p99=$(printf '%s\n' "${LF_REQ[@]}" | awk 'BEGIN {m = 0} $3 > m {m = $3} END {print m}')
    ratio=$(awk -v a="$lf_q" -v b="$ng_q" 'BEGIN {printf "%.2f", a / b}')
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$HUB_PID/status")
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$HUB_PID/status")
    ng_rss=0
    for p in "${NGINX_PIDS[@]}"; do
        ng_rss=$((ng_rss + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")))
    done
    say ""
    say "  median of $ROUNDS: nginx $ng_q req/s (p99 $ng_p99 ms, $ng_cpu us CPU/request), labforge $lf_q req/s (p99 $lf_p99 ms, worst round $worst_p99 ms, $lf_cpu us CPU/request)"
    say "  labforge / nginx: ${ratio}x   (target >= 0.8x: $(awk -v r="$ratio" 'BEGIN {print (r >= 0.8) ? "met" : "NOT met"}'); p99 < 10 ms: $(awk -v p="$worst_p99" 'BEGIN {print (p < 10) ? "met" : "NOT met"}'))"
    say "  hub memory after part 1: VmHWM $((hwm / 1024)) MiB, VmRSS $((rss / 1024)) MiB; nginx (master + workers) VmRSS $((ng_rss / 1024)) MiB"
    say ""
    kill -QUIT "$NGINX_PID" 2>/dev/null || true
    NGINX_PID=""
fi

# ---------------------------------------------------------------------------
# Part 2: 1,000 readers while the catalog is republished
# ---------------------------------------------------------------------------
if [[ " $PARTS " == *" 2 "* ]]; then
    log "part 2: $READERS readers, $REPUBLISHES republishes"
    out=$(python3 "$REPO_ROOT/benches/hub-consistency.py" "$HUB" \
        --toggle-file "$WORK/toggle.json" \
        --readers "$READERS" --republishes "$REPUBLISHES" --profiles "$N" \
        --full-query "$FULL_QUERY" --filter-query "$FILTER_QUERY" \
        2>"$WORK/consistency.err") && rc=0 || rc=$?
    grep -F '  FAIL' "$WORK/consistency.err" >&2 || true
    result=$(sed -n 's/^RESULT //p' <<<"$out")
    [[ -n "$result" ]] || die "hub-consistency.py printed no result"
    say "consistency: $(head -n 1 "$WORK/consistency.err")"
    say "  $result"
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$HUB_PID/status")
    say "  hub VmHWM after part 2: $((hwm / 1024)) MiB"
    [[ $rc == 0 ]] || die "consistency check failed (see above)"
fi

warnings=$(grep -cE 'WARN|ERROR' "$WORK/hub.err" || true)
say "hub warnings and errors on stderr: ${warnings:-0}"
say "done in $SECONDS s"

#!/usr/bin/env bash
# labforge push benchmark: the "Push" figures in docs/benchmarks.md.
#
# Usage (as root, from anywhere):  bash benches/push.sh
#
# Builds a ~1.5 GB test image on the busybox stand-in (three layers of
# random bytes and one text layer, made on the host and COPYed in with the
# classic builder), then measures side by side, each push against a registry
# of its own (a fresh `docker-registry` process on a free port with empty
# storage, so no blob is ever present beforehand):
#
#   a. docker push
#   b. skopeo copy docker-daemon:IMAGE docker://…   (gzip)
#   c. sha256sum over the image's layer tars (saved beforehand, page cache warm)
#   d. labforge push, gzip (fresh state: no push cache; layers read from the
#      local engine's layer store, the default when the engine is local)
#   d'. the same through the engine's export API only (--no-layer-store)
#   e. labforge push --compression zstd (fresh state)
#   f. labforge push of the same image to a second repository of d's registry
#   g. labforge push of the unchanged image again (d's registry and repository)
# plus `docker save > /dev/null` (the engine's export alone, the floor for
# every push that reads the image through the engine API), the peak RSS of
# labforge (/usr/bin/time), and prints a markdown table with the ratios.
#
# Needs: Docker Engine and docker CLI, docker-registry, skopeo, python3,
# cargo; installs `time` (Debian) when missing.
#
# Environment (defaults in brackets):
#   BENCH_PUSH_RANDOM_MIB   size of each random layer in MiB   [480]
#   BENCH_PUSH_TEXT_MIB     size of the text layer in MiB      [50]
#   BENCH_PUSH_REPEAT       runs of f and g (median taken)     [5]
#   BENCH_PUSH_KEEP         1 = keep the work folder and image [0]
#   BENCH_PUSH_WORK         work folder                        [/var/tmp/labforge-push-bench]
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
readonly RANDOM_MIB="${BENCH_PUSH_RANDOM_MIB:-480}"
readonly TEXT_MIB="${BENCH_PUSH_TEXT_MIB:-50}"
readonly REPEAT="${BENCH_PUSH_REPEAT:-5}"
readonly KEEP="${BENCH_PUSH_KEEP:-0}"
readonly WORK="${BENCH_PUSH_WORK:-/var/tmp/labforge-push-bench}"
readonly BIN="$REPO_ROOT/target/release/labforge"
readonly IMAGE="labforge-bench/push:r${RANDOM_MIB}-t${TEXT_MIB}"
readonly BUSYBOX="labforge-standin/busybox:latest"

log() { printf '[push-bench] %s\n' "$*" >&2; }
die() { printf '[push-bench] FAILED: %s\n' "$*" >&2; exit 1; }

[[ -f /var/lib/labforge/env ]] && . /var/lib/labforge/env
[[ -x /usr/bin/time ]] || {
    log "installing Debian package time"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends time >/dev/null 2>&1 \
        || { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends time >/dev/null; } \
        || die "apt-get install time failed"
}
for tool in docker docker-registry skopeo python3 cargo sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is required (scripts/services.sh installs it)"
done
docker info >/dev/null 2>&1 || die "the Docker Engine does not answer (bash scripts/services.sh starts it)"
docker image inspect "$BUSYBOX" >/dev/null 2>&1 || die "no $BUSYBOX in the engine (bash scripts/services.sh builds it)"

log "building the release binary"
(cd "$REPO_ROOT" && cargo build --release --quiet -p labforge) || die "cargo build --release failed"

mkdir -p "$WORK"
REGISTRY_PID=""
REGISTRY_STORAGE=""
cleanup() {
    stop_registry
    if [[ "$KEEP" != 1 ]]; then
        rm -rf "$WORK"
        docker rmi -f "$IMAGE" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
# A registry of its own per measurement: fresh storage, free port.
# ---------------------------------------------------------------------------
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
start_registry() {
    stop_registry
    local port
    port=$(free_port)
    REGISTRY_ADDR="127.0.0.1:$port"
    REGISTRY_STORAGE=$(mktemp -d "$WORK/registry.XXXXXX")
    REGISTRY_HTTP_ADDR="$REGISTRY_ADDR" \
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY="$REGISTRY_STORAGE" \
    REGISTRY_LOG_LEVEL=error \
        docker-registry serve "$REPO_ROOT/registry-config/config.yml" >"$WORK/registry.log" 2>&1 &
    REGISTRY_PID=$!
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    die "the registry did not start on $REGISTRY_ADDR"
}
stop_registry() {
    if [[ -n "$REGISTRY_PID" ]]; then
        kill "$REGISTRY_PID" 2>/dev/null || true
        wait "$REGISTRY_PID" 2>/dev/null || true
        REGISTRY_PID=""
    fi
    if [[ -n "$REGISTRY_STORAGE" ]]; then
        rm -rf "$REGISTRY_STORAGE"
        REGISTRY_STORAGE=""
    fi
}

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }

# ---------------------------------------------------------------------------
# The test image.
# ---------------------------------------------------------------------------
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "generating ${RANDOM_MIB} MiB × 3 random + ${TEXT_MIB} MiB text in $WORK/context"
    mkdir -p "$WORK/context"
    for i in 1 2 3; do
        head -c "${RANDOM_MIB}M" /dev/urandom >"$WORK/context/random$i.bin"
    done
    python3 - "$WORK/context/text.txt" "$TEXT_MIB" <<'EOF'
import random, sys
random.seed(7)
words = ["".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(random.randint(2, 10))) for _ in range(5000)]
limit = int(sys.argv[2]) << 20
with open(sys.argv[1], "w") as f:
    n = 0
    while n < limit:
        line = " ".join(random.choice(words) for _ in range(12)) + "\n"
        f.write(line)
        n += len(line)
EOF
    cat >"$WORK/context/Dockerfile" <<EOF
FROM $BUSYBOX
COPY random1.bin /data/random1.bin
COPY random2.bin /data/random2.bin
COPY random3.bin /data/random3.bin
COPY text.txt /data/text.txt
EOF
    log "building $IMAGE"
    DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$WORK/context" >/dev/null || die "docker build failed"
    rm -rf "$WORK/context"
fi
IMAGE_SIZE=$(docker image inspect --format '{{.Size}}' "$IMAGE")
log "image $IMAGE: $IMAGE_SIZE bytes"

declare -A T
declare -A NOTE

# ---------------------------------------------------------------------------
# Peers.
# ---------------------------------------------------------------------------
log "docker save > /dev/null (the engine's export alone)"
t0=$(now); docker save "$IMAGE" >/dev/null; t1=$(now)
T[save]=$(elapsed "$t0" "$t1")

log "saving the layer tars for sha256sum"
rm -rf "$WORK/saved" && mkdir -p "$WORK/saved"
docker save "$IMAGE" | tar -x -C "$WORK/saved"
cat "$WORK"/saved/*/layer.tar >/dev/null   # warm the page cache
t0=$(now); sha256sum "$WORK"/saved/*/layer.tar >/dev/null; t1=$(now)
T[sha256sum]=$(elapsed "$t0" "$t1")
rm -rf "$WORK/saved"

log "a. docker push"
start_registry
docker tag "$IMAGE" "$REGISTRY_ADDR/bench/push:docker"
t0=$(now); docker push -q "$REGISTRY_ADDR/bench/push:docker" >/dev/null; t1=$(now)
T[docker]=$(elapsed "$t0" "$t1")
docker rmi "$REGISTRY_ADDR/bench/push:docker" >/dev/null

log "b. skopeo copy (gzip)"
start_registry
t0=$(now)
skopeo copy -q --dest-tls-verify=false "docker-daemon:$IMAGE" "docker://$REGISTRY_ADDR/bench/push:skopeo" >/dev/null
t1=$(now)
T[skopeo]=$(elapsed "$t0" "$t1")

# labforge push with /usr/bin/time: wall seconds and max RSS (KiB) into $WORK/time.txt
labforge_push() { # state target args...
    local state=$1 target=$2
    shift 2
    /usr/bin/time -f '%e %M' -o "$WORK/time.txt" \
        "$BIN" push "$IMAGE" "$target" --state "$state" --json "$@" >"$WORK/pushed.json" 2>"$WORK/push.log" \
        || { cat "$WORK/push.log" >&2; die "labforge push $target failed"; }
    read -r LAST_TIME LAST_RSS <"$WORK/time.txt"
}
uploaded() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$WORK/pushed.json" "$1"; }

log "d. labforge push (gzip)"
start_registry
rm -rf "$WORK/state-gzip"
labforge_push "$WORK/state-gzip" "$REGISTRY_ADDR/bench/push:gzip"
T[gzip]=$LAST_TIME; RSS_GZIP=$LAST_RSS
NOTE[gzip]="$(uploaded blobs_uploaded) blobs, $(uploaded uploaded_bytes) bytes uploaded"
SIZE_GZIP=$(uploaded size)

log "f. second repository, g. unchanged re-push (×$REPEAT each)"
second=() ; again=()
for i in $(seq 1 "$REPEAT"); do
    labforge_push "$WORK/state-gzip" "$REGISTRY_ADDR/bench/second-$i:gzip"
    second+=("$LAST_TIME")
    [[ "$(uploaded uploaded_bytes)" == 0 && "$(uploaded exported)" == False ]] || die "second-repository push uploaded or exported: $(cat "$WORK/pushed.json")"
    labforge_push "$WORK/state-gzip" "$REGISTRY_ADDR/bench/push:gzip" --tag "again-$i"
    again+=("$LAST_TIME")
    [[ "$(uploaded uploaded_bytes)" == 0 && "$(uploaded exported)" == False ]] || die "re-push uploaded or exported: $(cat "$WORK/pushed.json")"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
T[second]=$(median "${second[@]}")
T[again]=$(median "${again[@]}")
NOTE[second]="median of $REPEAT: ${second[*]}; 0 bytes uploaded, no export"
NOTE[again]="median of $REPEAT: ${again[*]}; 0 bytes uploaded, no export"

log "d'. labforge push (gzip) --no-layer-store"
start_registry
rm -rf "$WORK/state-export"
labforge_push "$WORK/state-export" "$REGISTRY_ADDR/bench/push:export" --no-layer-store
T[export]=$LAST_TIME; RSS_EXPORT=$LAST_RSS
rm -rf "$WORK/state-export"

log "e. labforge push --compression zstd"
start_registry
rm -rf "$WORK/state-zstd"
labforge_push "$WORK/state-zstd" "$REGISTRY_ADDR/bench/push:zstd" --compression zstd
T[zstd]=$LAST_TIME; RSS_ZSTD=$LAST_RSS
SIZE_ZSTD=$(uploaded size)
stop_registry

ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }

cat <<EOF

## Push benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, image $IMAGE_SIZE bytes)

| # | What | Time (s) | Ratio | Target |
|---|---|---|---|---|
| – | \`docker save > /dev/null\` (engine export alone) | ${T[save]} | – | – |
| a | \`docker push\` | ${T[docker]} | – | – |
| b | \`skopeo copy docker-daemon: docker://\` (gzip) | ${T[skopeo]} | – | – |
| c | \`sha256sum\` over the layer tars | ${T[sha256sum]} | – | – |
| d | \`labforge push\`, gzip, fresh | ${T[gzip]} | $(ratio "${T[gzip]}" "${T[skopeo]}")× skopeo, $(ratio "${T[gzip]}" "${T[docker]}")× docker push | ≤ 0.6× skopeo |
| d′ | the same, \`--no-layer-store\` (export API only) | ${T[export]} | $(ratio "${T[export]}" "${T[skopeo]}")× skopeo, $(ratio "${T[export]}" "${T[save]}")× docker save | – |
| e | \`labforge push --compression zstd\`, fresh | ${T[zstd]} | $(ratio "${T[zstd]}" "${T[sha256sum]}")× sha256sum | ≤ 2× sha256sum |
| f | second repository | ${T[second]} | – | < 0.5 s |
| g | unchanged re-push | ${T[again]} | – | < 0.2 s |

Peak RSS of labforge: gzip $((RSS_GZIP / 1024)) MiB, export API $((RSS_EXPORT / 1024)) MiB, zstd $((RSS_ZSTD / 1024)) MiB (target < 200 MB).
Compressed sizes: gzip $SIZE_GZIP bytes, zstd $SIZE_ZSTD bytes. d: ${NOTE[gzip]}.
f: ${NOTE[second]}. g: ${NOTE[again]}.
EOF

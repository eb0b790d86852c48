#!/usr/bin/env bash
# labforge benchmarks: the figures recorded in docs/benchmarks.md.
#
# Usage (as root, from anywhere):  bash benches/run.sh
#
# What it measures (hyperfine: 3 warm-up runs, at least BENCH_RUNS runs):
#   a. labforge validate                     on a generated catalog of BENCH_IMAGES images
#   b. labforge plan --no-registry --json    on it (validate + render + plan, one process)
#   c. labforge render --out DIR             on it (includes writing ~BENCH_IMAGES folders),
#      on disk and on tmpfs, each beside `cp -r` of the same tree
#   d. labforge plan --registry ... --json   on the shipped catalog against the local
#      registry, with nothing present and with everything present; the manifest
#      HEAD/GET requests the registry logged for one run of each; and the peer:
#      `skopeo inspect --raw` once per image, sequentially (what a script would do)
#   e. peak memory (max RSS) of labforge plan --no-registry on the generated catalog
# and prints a summary at the end.
#
# Needs: the local registry (scripts/services.sh starts it), skopeo, python3;
# installs hyperfine and time (Debian packages) when missing.
#
# Environment (defaults in brackets):
#   BENCH_IMAGES   concrete images in the generated catalog  [500]
#   BENCH_RUNS     hyperfine runs per measurement (min 20)   [20]
#   BENCH_SEED     generator seed                            [1]
#   BENCH_KEEP     1 = keep the work folder for inspection   [0]
#   LABFORGE_TEST_REGISTRY  registry host:port              [127.0.0.1:5000]
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
readonly N="${BENCH_IMAGES:-500}"
RUNS="${BENCH_RUNS:-20}"
(( RUNS >= 20 )) || RUNS=20
readonly RUNS
readonly WARMUP=3
readonly SEED="${BENCH_SEED:-1}"
readonly REGISTRY="${LABFORGE_TEST_REGISTRY:-127.0.0.1:5000}"
readonly REGISTRY_LOG=/var/log/labforge/registry.log
readonly STANDIN="$REGISTRY/standin/busybox:latest"
readonly BIN="$REPO_ROOT/target/release/labforge"
STARTED=$(date +%s)

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] FAILED: %s\n' "$*" >&2; exit 1; }

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
command -v hyperfine >/dev/null || apt_install hyperfine
[[ -x /usr/bin/time ]] || apt_install time
for tool in skopeo python3 curl cargo; do
    command -v "$tool" >/dev/null || die "$tool is not installed (skopeo: bash scripts/services.sh)"
done

# ---------------------------------------------------------------------------
# Work folder, registry prefix, clean-up
# ---------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/labforge-bench.XXXXXX")
PREFIX="bench-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
readonly WORK PREFIX
COPIED_REFS=()
cleanup() {
    local rc=$?
    # The stand-in copies under our random prefix: remove the manifests again
    # (best effort; the blobs are the stand-in's and stay).
    local ref
    for ref in "${COPIED_REFS[@]}"; do
        skopeo delete --tls-verify=false "docker://$ref" >/dev/null 2>&1 || true
    done
    [[ -n "${SHM:-}" ]] && rm -rf "$SHM"
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

# ---------------------------------------------------------------------------
# Build, generate, check
# ---------------------------------------------------------------------------
log "building the release binary (cargo build --release)"
(cd "$REPO_ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
[[ -x "$BIN" ]] || die "no $BIN after the build"

GEN="$WORK/gen"
log "generating a $N-image catalog into $GEN"
python3 "$REPO_ROOT/benches/generate-catalog.py" "$GEN" --images "$N" --seed "$SEED" >&2
CAT=(--catalog "$GEN/catalog" --dockerfiles "$GEN/dockerfiles")
if ! out=$("$BIN" validate "${CAT[@]}" 2>&1); then
    printf '%s\n' "$out" | tail -n 20 >&2
    die "the generated catalog does not pass labforge validate"
fi
log "$out"
got=$("$BIN" validate --json "${CAT[@]}" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["images"]))')
[[ "$got" == "$N" ]] || die "the generated catalog has $got images, expected $N"

SHIPPED=(--catalog "$REPO_ROOT/catalog" --dockerfiles "$REPO_ROOT/dockerfiles")
"$BIN" validate "${SHIPPED[@]}" >/dev/null || die "the shipped catalog does not validate"

# The registry: up, with the stand-in to copy.
if ! curl -fsS --max-time 5 -o /dev/null "http://$REGISTRY/v2/"; then
    log "registry at $REGISTRY not answering; running scripts/services.sh"
    bash "$REPO_ROOT/scripts/services.sh" >&2 || die "scripts/services.sh failed"
fi
skopeo inspect --raw --tls-verify=false "docker://$STANDIN" >/dev/null \
    || die "$STANDIN missing (bash scripts/services.sh pushes it)"
[[ -r "$REGISTRY_LOG" ]] || die "cannot read the registry log $REGISTRY_LOG"

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
# stats KEY LABEL JSON: one summary line in ms from a hyperfine export; also
# remembers the mean (ms) in MEAN[KEY].
declare -A MEAN=()
stats() {
    local key=$1 name=$2 json=$3 line
    line=$(python3 - "$json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
ms = lambda s: s * 1000.0
print(f'{ms(r["mean"]):.1f} {ms(r["stddev"] or 0):.1f} {ms(r["median"]):.1f} '
      f'{ms(r["min"]):.1f} {ms(r["max"]):.1f} {len(r["times"])}')
PY
)
    local mean sd median min max runs
    read -r mean sd median min max runs <<<"$line"
    MEAN[$key]=$mean
    say "$(printf '  %-44s mean %8.1f ms ± %6.1f   median %8.1f   min %8.1f   max %8.1f   (%s runs)' \
        "$name" "$mean" "$sd" "$median" "$min" "$max" "$runs")"
}

# bench KEY LABEL [hyperfine options...] -- COMMAND: hyperfine without a shell in between.
bench() {
    local key=$1 name=$2; shift 2
    local opts=()
    while [[ $1 != -- ]]; do opts+=("$1"); shift; done
    shift
    local json="$WORK/hf-$key.json"
    log "hyperfine: $name"
    local runs=(--min-runs "$RUNS")
    [[ " ${opts[*]} " == *" --runs "* ]] && runs=()
    hyperfine -N --style basic --warmup "$WARMUP" "${runs[@]}" \
        --export-json "$json" "${opts[@]}" "$*" >&2
    stats "$key" "$name" "$json"
}

# count_requests OFFSET: the registry log lines appended after byte OFFSET,
# as "heads gets connections others" for our prefix (access-log lines, one per
# request; connections = distinct client ports of those HEADs).
count_requests() {
    local offset=$1
    sleep 0.5 # let the registry finish writing its access log
    tail -c +"$((offset + 1))" "$REGISTRY_LOG" >"$WORK/log-window.txt"
    python3 - "$WORK/log-window.txt" "$PREFIX" <<'PY'
import re, sys
text = open(sys.argv[1], errors="replace").read().splitlines()
prefix = re.escape(sys.argv[2])
access = re.compile(r'"(HEAD|GET|PUT|POST|DELETE|PATCH) (/v2/\S*) HTTP/[0-9.]+"')
heads = gets = others = 0
for line in text:
    m = access.search(line)
    if not m:
        continue
    method, uri = m.groups()
    ours = re.match(rf"/v2/{prefix}/\S+/manifests/\S+$", uri)
    if ours and method == "HEAD":
        heads += 1
    elif ours and method == "GET":
        gets += 1
    else:
        others += 1
ports = set()
for line in text:
    if "http.request.method=HEAD" in line and f"http.request.uri=/v2/{sys.argv[2]}/" in line:
        m = re.search(r'http.request.remoteaddr="?[^" ]*:(\d+)', line)
        if m:
            ports.add(m.group(1))
print(heads, gets, len(ports), others)
PY
}

log_size() { stat -c %s "$REGISTRY_LOG"; }

# ---------------------------------------------------------------------------
# Header
# ---------------------------------------------------------------------------
commit=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null | grep -c . || true)
say "labforge benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
say "  machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -h | awk '/^Mem:/ {print $2}') RAM, $(uname -sr)"
say "  labforge: $commit (+$dirty uncommitted paths in the work tree), $("$BIN" --version)"
say "  tools: $(hyperfine --version), $(skopeo --version)"
say "  generated catalog: $N images, seed $SEED ($("$BIN" validate "${CAT[@]}"))"
say ""

# ---------------------------------------------------------------------------
# a-c. The generated catalog
# ---------------------------------------------------------------------------
say "Generated $N-image catalog (hyperfine, warm-up $WARMUP, >= $RUNS runs):"
bench validate "a. validate ($N images)" -- "$BIN" validate "${CAT[@]}"
bench plan "b. plan --no-registry --json ($N images)" -- "$BIN" plan --no-registry --json "${CAT[@]}"
# Each run renders into a new folder (a tiny bash wrapper picks the name), and
# nothing is deleted until the end: on this VM's ext4 (mounted with discard),
# deleting a 2,000-file tree between runs made the next runs 5-10x slower, for
# labforge and cp alike. The peer is `cp -r` of the same rendered tree: the
# file-system floor for writing those files.
RENDER_REF="$WORK/render-ref"
"$BIN" render --out "$RENDER_REF" "${CAT[@]}" >/dev/null
folders=$(find "$RENDER_REF" -mindepth 1 -maxdepth 1 -type d | wc -l)
files=$(find "$RENDER_REF" -type f | wc -l)
bytes=$(du -sb "$RENDER_REF" | cut -f1)
render_scripts() { # KEY DIR: writes render-KEY.sh and cp-KEY.sh that write into new folders under DIR
    local key=$1 dir=$2
    mkdir -p "$dir"
    printf '#!/usr/bin/env bash\nexec %q render --out "$(mktemp -u -d %q/render.XXXXXXXX)" %s >/dev/null\n' \
        "$BIN" "$dir" "$(printf '%q ' "${CAT[@]}")" >"$WORK/render-$key.sh"
    printf '#!/usr/bin/env bash\nexec cp -r %q "$(mktemp -u -d %q/copy.XXXXXXXX)"\n' \
        "$RENDER_REF" "$dir" >"$WORK/cp-$key.sh"
}
render_scripts disk "$WORK/renders"
bench render "c. render --out, disk ($folders folders)" --runs "$RUNS" -- bash "$WORK/render-disk.sh"
bench render_cp "   peer: cp -r of the same tree, disk" --runs "$RUNS" -- bash "$WORK/cp-disk.sh"
say "    (render writes $folders image folders, $files files, $((bytes / 1024 / 1024)) MiB, into a new folder per run;"
say "     labforge / cp -r: $(awk -v a="${MEAN[render]}" -v b="${MEAN[render_cp]}" 'BEGIN {printf "%.1f", a / b}')x)"
if [[ -d /dev/shm && -w /dev/shm ]]; then
    SHM=$(mktemp -d /dev/shm/labforge-bench.XXXXXX)
    render_scripts shm "$SHM"
    bench render_shm "c. render --out, tmpfs /dev/shm" --runs "$RUNS" -- bash "$WORK/render-shm.sh"
    bench render_shm_cp "   peer: cp -r of the same tree, tmpfs" --runs "$RUNS" -- bash "$WORK/cp-shm.sh"
    rm -rf "$SHM"
    SHM=""
    say "    (labforge / cp -r on tmpfs: $(awk -v a="${MEAN[render_shm]}" -v b="${MEAN[render_shm_cp]}" 'BEGIN {printf "%.1f", a / b}')x)"
fi
bench plan_shipped "   reference: plan --no-registry, shipped" -- "$BIN" plan --no-registry --json "${SHIPPED[@]}"
say ""

# ---------------------------------------------------------------------------
# d. The shipped catalog against the local registry
# ---------------------------------------------------------------------------
TARGET="$REGISTRY/$PREFIX"
say "Shipped catalog against the local registry $TARGET:"
PLAN=("$BIN" plan --registry "$TARGET" --json "${SHIPPED[@]}")

# One run with nothing present.
off=$(log_size)
"${PLAN[@]}" >"$WORK/plan-absent.json"
read -r heads_absent gets_absent conns_absent other_absent <<<"$(count_requests "$off")"
refs_file="$WORK/refs.txt"
read -r images absent <<<"$(python3 -c '
import json, sys
plan = json.load(open(sys.argv[1]))
refs = [i["reference"] for i in plan["images"]]
open(sys.argv[2], "w").write("\n".join(refs) + "\n")
print(len(refs), sum(1 for i in plan["images"] if i["registry"]["state"] == "absent"))
' "$WORK/plan-absent.json" "$refs_file")"
(( absent == images )) || die "expected all $images images absent under the new prefix, $absent are"
say "  nothing present: $images images, $heads_absent manifest HEADs, $gets_absent manifest GETs, over $conns_absent connection(s) ($other_absent other requests in the log window)"

bench absent "d1. plan --registry, nothing present" -- "${PLAN[@]}"

# Everything present: the stand-in copied to every content tag.
log "copying $STANDIN to the $images content tags"
mapfile -t REFS <"$refs_file"
for ref in "${REFS[@]}"; do
    skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
        "docker://$STANDIN" "docker://$ref" >/dev/null || die "skopeo copy to $ref failed"
    COPIED_REFS+=("$ref")
done
off=$(log_size)
"${PLAN[@]}" >"$WORK/plan-present.json"
read -r heads_present gets_present conns_present other_present <<<"$(count_requests "$off")"
present=$(python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); print(sum(1 for i in p["images"] if i["registry"]["state"]=="present"))' "$WORK/plan-present.json")
(( present == images )) || die "expected all $images images present after the copies, $present are"
say "  all present:     $images images, $heads_present manifest HEADs, $gets_present manifest GETs, over $conns_present connection(s) ($other_present other requests in the log window)"

bench present "d2. plan --registry, all present" -- "${PLAN[@]}"

# The peer: what a script would do, one skopeo inspect per image, in a row.
cat >"$WORK/skopeo-loop.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
while read -r ref; do
    skopeo inspect --raw --tls-verify=false "docker://\$ref" >/dev/null
done <"$refs_file"
EOF
bench peer "d3. peer: skopeo inspect --raw x $images, sequential" -- bash "$WORK/skopeo-loop.sh"
ratio=$(awk -v a="${MEAN[peer]}" -v b="${MEAN[present]}" 'BEGIN {printf "%.1f", a / b}')
say "  peer / labforge (all present): ${ratio}x"
say "  registry part of plan (all present minus plan --no-registry of the shipped catalog): $(awk -v a="${MEAN[present]}" -v b="${MEAN[plan_shipped]}" 'BEGIN {printf "%.1f", a - b}') ms"
say ""

# ---------------------------------------------------------------------------
# e. Peak memory
# ---------------------------------------------------------------------------
rss() { # command... -> max RSS in KiB
    /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ {print $2}'
}
rss_runs=()
for _ in 1 2 3 4 5; do rss_runs+=("$(rss "$BIN" plan --no-registry "${CAT[@]}")"); done
rss_shipped=$(rss "$BIN" plan --no-registry "${SHIPPED[@]}")
read -r rss_median rss_max <<<"$(printf '%s\n' "${rss_runs[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)], a[NR]}')"
say "Peak memory (/usr/bin/time -v, max RSS, 5 runs):"
say "$(awk -v n="$N" -v med="$rss_median" -v max="$rss_max" -v k="$images" -v s="$rss_shipped" 'BEGIN {
    printf "  e. plan --no-registry (%s images): median %.1f MiB, max %.1f MiB; shipped catalog (%s images): %.1f MiB", n, med / 1024, max / 1024, k, s / 1024 }')"
say ""

# ---------------------------------------------------------------------------
# Summary against the targets
# ---------------------------------------------------------------------------
plan_ms=${MEAN[plan]}
verdict() { if [[ $1 == 1 ]]; then echo MET; else echo "NOT MET"; fi; }
t1=$(awk -v m="$plan_ms" 'BEGIN {print (m < 200) ? 1 : 0}')
t2=0
if (( heads_absent == images && heads_present == images && gets_absent == 0 && gets_present == 0 && conns_present > 1 )); then t2=1; fi
say "Targets:"
say "  validate + render + plan of a $N-image catalog < 200 ms: mean ${plan_ms} ms -> $(verdict "$t1")"
say "  plan against a registry: one HEAD per image, concurrent: $heads_absent/$heads_present HEADs for $images images, $gets_absent/$gets_present GETs, $conns_absent/$conns_present connections -> $(verdict "$t2")"
say "  (total bench time $(( $(date +%s) - STARTED )) s)"

echo
echo "===================== summary ====================="
cat "$SUMMARY"

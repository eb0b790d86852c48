#!/usr/bin/env bash
# No-op `labforge build` of the whole shipped catalog: every image is already
# in the local registry (build it once first: `labforge --config
# labforge.local.toml build`), so the run must make zero engine calls and
# finish in under a second. The engine address is made unusable
# (DOCKER_HOST=unix:///nonexistent) so that any engine call would fail the
# run. Side by side: `skopeo inspect` of the same content tags, one after
# another (what a shell script around the registry would do).
#
#   bash benches/build-noop.sh        # as root, after scripts/services.sh
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. /var/lib/labforge/env
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null

cargo build --release --locked -q
labforge=$PWD/target/release/labforge
config=(--config labforge.local.toml)
runs=${BENCH_RUNS:-10}
# BENCH_BUILD_IMAGES="a b c" limits the run to those images (default: all).
read -r -a selection <<<"${BENCH_BUILD_IMAGES:-}"

# The run must find everything and not touch the engine.
summary=$(DOCKER_HOST=unix:///nonexistent/docker.sock "$labforge" "${config[@]}" build --json "${selection[@]}" 2>/dev/null) || {
    echo "the no-op build failed: is every image built? run: $labforge ${config[*]} build" >&2
    exit 1
}
images=$(jq '.images | length' <<<"$summary")
present=$(jq '[.images[] | select(.result == "present")] | length' <<<"$summary")
engine=$(jq '.engine_used' <<<"$summary")
echo "images: $images, present: $present, engine used: $engine"
[ "$images" = "$present" ] && [ "$engine" = false ] || { echo "not a no-op run" >&2; exit 1; }

refs=$(jq -r '.images[] | "\(.repository):\(.content_tag)"' <<<"$summary")
printf '%s\n' "$refs" > /tmp/labforge-noop-refs.txt

hyperfine -N --warmup 2 --runs "$runs" --export-markdown /tmp/labforge-noop.md \
    -n "labforge build (no-op, $images images)" \
    "env DOCKER_HOST=unix:///nonexistent/docker.sock $labforge ${config[*]} build --json ${selection[*]}" \
    -n "skopeo inspect x$images (sequential)" \
    "bash -c 'while read -r r; do skopeo inspect --tls-verify=false --raw docker://\$r >/dev/null; done < /tmp/labforge-noop-refs.txt'"
cat /tmp/labforge-noop.md
/usr/bin/time -v env DOCKER_HOST=unix:///nonexistent/docker.sock "$labforge" "${config[@]}" build --json "${selection[@]}" 2>&1 >/dev/null \
    | grep -E "Maximum resident|Elapsed"

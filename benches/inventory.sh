#!/usr/bin/env bash
# Package inventory of a ~1.5 GB image: `labforge sbom --engine` (the
# inventory the scan gate makes, as a CycloneDX SBOM) side by side with
# `trivy image --format cyclonedx` on the same engine image, in one run.
# Reports wall time (hyperfine), peak memory (GNU time) and the difference
# between the two package sets (deb, Python, conda).
#
# The image: BENCH_INVENTORY_IMAGE, else the shipped `compilers` image from
# the local registry (build it once: `labforge --config labforge.local.toml
# build compilers-main`) with a 250 MB layer of random bytes on top, so that
# it weighs about 1.5 GB.
#
#   bash benches/inventory.sh        # as root, after scripts/services.sh
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. /var/lib/labforge/env
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
command -v trivy >/dev/null || { echo "trivy is missing: run bash scripts/services.sh" >&2; exit 1; }

cargo build --release --locked -q
labforge=$PWD/target/release/labforge
runs=${BENCH_RUNS:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

image=${BENCH_INVENTORY_IMAGE:-}
if [ -z "$image" ]; then
    image=labforge-bench/inventory:1.5g
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        base=$(docker images --format '{{.Repository}}:{{.Tag}}' "${LABFORGE_TEST_REGISTRY}/labforge/compilers" | head -n1)
        [ -n "$base" ] || { echo "no compilers image in the engine: build it first (labforge --config labforge.local.toml build compilers-main)" >&2; exit 1; }
        printf 'FROM %s\nUSER root\nRUN head -c 250000000 /dev/urandom > /opt/padding.bin\n' "$base" > "$work/Dockerfile"
        docker build -q -t "$image" "$work" >/dev/null
    fi
fi
size=$(docker image inspect --format '{{.Size}}' "$image")
layers=$(docker image inspect --format '{{len .RootFS.Layers}}' "$image")
echo "image: $image, $((size / 1000000)) MB, $layers layers"

# Trivy offline: no vulnerability database needed for an SBOM; skip Java
# archives, whose scan would try to download the Java database; an in-memory
# cache so that every run does the work.
trivy_cmd="trivy image --quiet --format cyclonedx --image-src docker --skip-version-check --cache-backend memory --skip-files '**/*.jar' --output $work/trivy.json $image"
ours_cmd="$labforge sbom --engine $image --output $work/ours.json"

hyperfine --warmup 1 --runs "$runs" --export-markdown "$work/inventory.md" \
    -n "labforge sbom --engine" "$ours_cmd" \
    -n "trivy image --format cyclonedx" "$trivy_cmd"
cat "$work/inventory.md"

echo
echo "peak memory:"
for name in ours trivy; do
    cmd=$ours_cmd
    [ "$name" = trivy ] && cmd=$trivy_cmd
    rss=$(/usr/bin/time -f '%M' bash -c "$cmd" 2>&1 >/dev/null | tail -n1)
    echo "  $name: $((rss / 1024)) MiB"
done

# The package sets: (kind, name, version), from each SBOM.
jq -r '.components[] | [(.properties // [] | map(select(.name == "labforge:package:kind")) | .[0].value // "?"), .name, .version] | @tsv' \
    "$work/ours.json" | sort -u > "$work/ours.tsv"
jq -r '.components[] | [(.properties // [] | map(select(.name == "aquasecurity:trivy:PkgType")) | .[0].value // "?"), .name, .version] | @tsv' \
    "$work/trivy.json" \
    | sed -e 's/^debian\t/deb\t/' -e 's/^ubuntu\t/deb\t/' -e 's/^python-pkg\t/pypi\t/' -e 's/^conda-pkg\t/conda\t/' \
    | sort -u > "$work/trivy.tsv"
echo
echo "packages: labforge $(wc -l < "$work/ours.tsv"), trivy $(wc -l < "$work/trivy.tsv")"
for kind in deb pypi conda; do
    echo "  $kind: labforge $(grep -c "^$kind	" "$work/ours.tsv" || true), trivy $(grep -c "^$kind	" "$work/trivy.tsv" || true)"
done
echo "only in labforge's:"
comm -23 "$work/ours.tsv" "$work/trivy.tsv" | sed 's/^/  /'
echo "only in trivy's:"
comm -13 "$work/ours.tsv" "$work/trivy.tsv" | sed 's/^/  /'

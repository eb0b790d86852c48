#!/usr/bin/env bash
# The main job, locally: install and start what is missing (Docker Engine,
# registry, stand-in bases), then validate, render and plan the shipped
# catalog against the local registry with the stand-ins as bases, and build,
# smoke-test and push its foundation images (the CPU notebook flavours).
#
#   bash scripts/quickstart.sh
#
# Output: the image list, rendered build contexts in .labforge/render/, the
# build plan, and the foundation images in 127.0.0.1:5000/labforge/notebook
# with their digests (`labforge --config labforge.local.toml status`). The
# first build takes 5-15 minutes (apt and pip inside the images); a second
# run finds everything in the registry and builds nothing.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null || ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "error: needs Rust 1.95 or newer with rustfmt and clippy (rustup: rustup component add rustfmt clippy)" >&2
    exit 1
fi

step() { printf '\n[quickstart] %s\n' "$*"; }

step "services: Docker Engine, registry, stand-in bases"
bash scripts/services.sh
# shellcheck disable=SC1091
. /var/lib/labforge/env

step "building labforge (release)"
cargo build --release --locked
labforge=target/release/labforge
config=(--config labforge.local.toml)

step "labforge validate"
"$labforge" "${config[@]}" validate --list

step "labforge render --out .labforge/render"
"$labforge" "${config[@]}" render --out .labforge/render

step "labforge plan (registry ${LABFORGE_TEST_REGISTRY}/labforge)"
"$labforge" "${config[@]}" plan

step "labforge build notebook-minimal-cpu notebook-scipy-cpu (build, smoke-test, push, scan, publish)"
"$labforge" "${config[@]}" build notebook-minimal-cpu notebook-scipy-cpu

step "labforge status"
"$labforge" "${config[@]}" status

step "labforge scan notebook-minimal-cpu notebook-scipy-cpu (rescan what is in the registry against today's advisories)"
"$labforge" "${config[@]}" scan notebook-minimal-cpu notebook-scipy-cpu

step "labforge scan-report notebook-minimal-cpu (the report attached to the published digest)"
"$labforge" "${config[@]}" scan-report notebook-minimal-cpu

step "labforge sbom notebook-minimal-cpu --table (the SBOM attached to it; first lines)"
"$labforge" "${config[@]}" sbom notebook-minimal-cpu --table > .labforge/sbom.txt
head -n 15 .labforge/sbom.txt
echo "… $(($(wc -l < .labforge/sbom.txt) - 1)) packages in all (.labforge/sbom.txt)"

step "labforge serve (the hub) on 127.0.0.1:8089: the profile list KubeSpawner reads"
"$labforge" "${config[@]}" serve --listen 127.0.0.1:8089 > .labforge/hub.out 2> .labforge/hub.log &
hub_pid=$!
trap 'kill "$hub_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    curl -fsS http://127.0.0.1:8089/readyz > /dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS http://127.0.0.1:8089/readyz || { cat .labforge/hub.log >&2; exit 1; }
echo
curl -fsS http://127.0.0.1:8089/api/v1/profiles \
    | jq -r '.[] | "\(.slug)\t\(.kubespawner_override.image)"'
echo "web catalog: http://127.0.0.1:8089/ (log: .labforge/hub.log)"
kill "$hub_pid"
wait "$hub_pid" 2>/dev/null || true
trap - EXIT

printf '\n[quickstart] done: contexts in .labforge/render/, images in %s/labforge/notebook, build logs in .labforge/state/logs/.\n' "${LABFORGE_TEST_REGISTRY}"

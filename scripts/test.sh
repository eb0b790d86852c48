#!/usr/bin/env bash
# The test command: install and start what the tests need, then run the
# format check, clippy and every test (unit, snapshot, integration against
# the real registry and engine). Run as root on Debian 12:
#
#   bash scripts/test.sh
#
# A missing engine, registry or tool fails the run; nothing is skipped.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null || ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "error: needs Rust 1.95 or newer with rustfmt and clippy (rustup: rustup component add rustfmt clippy)" >&2
    exit 1
fi

start=$SECONDS
step() { printf '\n[test] +%ss %s\n' "$((SECONDS - start))" "$*"; }

step "services: Docker Engine, registry, stand-in bases, hadolint, skopeo"
bash scripts/services.sh
# shellcheck disable=SC1091
. /var/lib/labforge/env

step "checking the engine and the registry answer"
docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})'
curl -fsS "http://${LABFORGE_TEST_REGISTRY}/v2/" >/dev/null
echo "registry ${LABFORGE_TEST_REGISTRY} answers"
for tool in hadolint skopeo; do
    command -v "$tool" >/dev/null || { echo "[test] $tool is missing" >&2; exit 1; }
done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
# CI=true keeps insta from writing snapshots: a changed Dockerfile fails.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one per binary,
# and the last ones are the doc tests, which are empty here).
read -r passed failed < <(awk '/^test result:/ {
    for (i = 2; i <= NF; i++) {
        if ($i ~ /^passed;?$/) p += $(i - 1)
        if ($i ~ /^failed;?$/) f += $(i - 1)
    }
} END { printf "%d %d\n", p, f }' "$log")
if [ "$status" -ne 0 ]; then
    step "cargo test failed (exit $status)"
    echo "tests: $passed passed, $failed failed"
    exit "$status"
fi
step "all checks passed"
echo "tests: $passed passed, $failed failed"
# The web catalog's pages in headless Chromium (tests/hub.rs), kept for review.
shots=(target/screenshots/*.png)
if [ -e "${shots[0]}" ]; then
    echo "screenshots of the web catalog: ${#shots[@]} in target/screenshots/"
fi

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
cargo test --workspace --locked --no-fail-fast

step "all checks passed"

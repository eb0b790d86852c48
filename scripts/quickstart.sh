#!/usr/bin/env bash
# The main job, locally: install and start what is missing (Docker Engine,
# registry, stand-in bases), then validate, render and plan the shipped
# catalog against the local registry with the stand-ins as bases.
#
#   bash scripts/quickstart.sh
#
# Output: the image list, rendered build contexts in .labforge/render/, and
# the build plan (what would be built, why, in which order).
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

printf '\n[quickstart] done: Dockerfiles and contexts are in .labforge/render/, one folder per image.\n'

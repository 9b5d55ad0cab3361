#!/bin/sh
# Container entrypoint: start vigor-serve from the VIGOR_* environment, but refuse to expose the
# admin routes (weight reloads) on the network without a token.
#
# Without VIGOR_ADMIN_TOKEN the server lets loopback clients use /admin. Inside a container that
# is only safe while nothing else shares its network namespace: with `network_mode: host` every
# local user of the host is loopback, and behind a sidecar proxy every request is. So a
# non-loopback bind with no token stops here; VIGOR_ALLOW_NO_ADMIN_TOKEN=1 is the deliberate
# opt-out (the admin routes then stay loopback-only, and a trainer cannot push weights).
#
# `docker run IMAGE --port 9000` passes flags to vigor-serve; `docker run IMAGE sh` runs a shell.
set -eu

if [ "${1:-}" = "vigor-serve" ]; then
    shift
fi
case "${1:-}" in
    "" | -*) ;;
    *) exec "$@" ;;
esac

host="${VIGOR_HOST:-127.0.0.1}"
admin_token="${VIGOR_ADMIN_TOKEN:-}"
serving=1

# Flags win over the environment in vigor-serve, so read the same ones here.
expect=""
for arg in "$@"; do
    case "$expect" in
        host) host="$arg" ;;
        admin_token) admin_token="$arg" ;;
    esac
    expect=""
    case "$arg" in
        --host) expect=host ;;
        --host=*) host="${arg#--host=}" ;;
        --admin-token) expect=admin_token ;;
        --admin-token=*) admin_token="${arg#--admin-token=}" ;;
        --prepare-only | -h | --help) serving=0 ;;
    esac
done

is_loopback() {
    case "$1" in
        localhost | 127.* | ::1 | "[::1]") return 0 ;;
        *) return 1 ;;
    esac
}

if [ "$serving" = 1 ] && [ -z "$admin_token" ] && ! is_loopback "$host" \
    && [ "${VIGOR_ALLOW_NO_ADMIN_TOKEN:-0}" != 1 ]; then
    cat >&2 <<MSG
vigor-entrypoint: refusing to start: binding ${host} with no admin token.
  The /admin routes (weight reloads) would be guarded only by a loopback check.
  Set VIGOR_ADMIN_TOKEN (e.g. from the .env file read by docker compose, see .env.example),
  or bind loopback only (VIGOR_HOST=127.0.0.1), or accept loopback-only admin routes
  with VIGOR_ALLOW_NO_ADMIN_TOKEN=1.
MSG
    exit 78
fi

exec vigor-serve "$@"

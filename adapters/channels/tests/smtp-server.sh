#!/usr/bin/env bash
# The real SMTP servers the email tests (tests/smtp.rs) deliver to: MailDev 3 (npm), twice,
# on loopback only.
#
#   open:  SMTP 127.0.0.1:18025, REST API http://127.0.0.1:18080  (no auth)
#   auth:  SMTP 127.0.0.1:18026, REST API http://127.0.0.1:18081  (AUTH required:
#          user "passage", password "passage-test-secret"; test-only credentials)
#
# Usage: smtp-server.sh start | stop | status
#   start  installs MailDev with npm when it is missing, starts both servers (if they are
#          not already answering), waits until their APIs answer and prints the variables
#          the tests read (the tests also default to these addresses).
#   stop   stops the servers this script started (by their pid files, nothing else).
#
# State (pid files, logs, stored mail) lives in $PASSAGE_SMTP_STATE_DIR, default
# ${TMPDIR:-/tmp}/passage-maildev.
set -euo pipefail

STATE_DIR=${PASSAGE_SMTP_STATE_DIR:-${TMPDIR:-/tmp}/passage-maildev}
MAILDEV_VERSION=3.0.0
AUTH_USER=passage
AUTH_PASS=passage-test-secret

# name smtp_port web_port extra-args...
SERVERS=(
    "open 18025 18080"
    "auth 18026 18081 --incoming-user $AUTH_USER --incoming-pass $AUTH_PASS"
)

healthy() {
    # MailDev 3 answers GET /api/healthz with `true`.
    curl -fsS --max-time 2 "http://127.0.0.1:$1/api/healthz" >/dev/null 2>&1
}

install() {
    if command -v maildev >/dev/null 2>&1; then
        return
    fi
    echo "smtp-server: installing maildev@$MAILDEV_VERSION with npm" >&2
    # MailDev 3 declares node >= 22 for some dependencies but runs on node 20; the warning
    # is expected.
    npm install -g --no-fund --no-audit --loglevel=error "maildev@$MAILDEV_VERSION" >&2
}

start() {
    install
    mkdir -p "$STATE_DIR"
    for server in "${SERVERS[@]}"; do
        # shellcheck disable=SC2086
        set -- $server
        local name=$1 smtp=$2 web=$3
        shift 3
        if healthy "$web"; then
            echo "smtp-server: $name already answering on $web" >&2
            continue
        fi
        mkdir -p "$STATE_DIR/$name/mail"
        # setsid: its own session, so the caller's job control or exit does not stop it.
        setsid maildev --ip 127.0.0.1 --web-ip 127.0.0.1 -s "$smtp" -w "$web" \
            --mail-directory "$STATE_DIR/$name/mail" "$@" \
            >"$STATE_DIR/$name.log" 2>&1 </dev/null &
        echo $! >"$STATE_DIR/$name.pid"
    done
    for server in "${SERVERS[@]}"; do
        # shellcheck disable=SC2086
        set -- $server
        local name=$1 web=$3 i
        for i in $(seq 1 60); do
            healthy "$web" && break
            if [ "$i" -eq 60 ]; then
                echo "smtp-server: $name did not come up; its log:" >&2
                cat "$STATE_DIR/$name.log" >&2 || true
                exit 1
            fi
            sleep 0.5
        done
    done
    cat <<EOF
export PASSAGE_TEST_SMTP=127.0.0.1:18025
export PASSAGE_TEST_SMTP_API=http://127.0.0.1:18080
export PASSAGE_TEST_SMTP_AUTH=127.0.0.1:18026
export PASSAGE_TEST_SMTP_AUTH_API=http://127.0.0.1:18081
EOF
}

stop() {
    for server in "${SERVERS[@]}"; do
        # shellcheck disable=SC2086
        set -- $server
        local name=$1 pidfile="$STATE_DIR/$1.pid"
        if [ -f "$pidfile" ]; then
            local pid
            pid=$(cat "$pidfile")
            # Only the process this script started, and only if it still is MailDev.
            if [ -n "$pid" ] && ps -p "$pid" -o args= 2>/dev/null | grep -q maildev; then
                kill "$pid" 2>/dev/null || true
            fi
            rm -f "$pidfile"
            echo "smtp-server: stopped $name" >&2
        fi
    done
}

status() {
    for server in "${SERVERS[@]}"; do
        # shellcheck disable=SC2086
        set -- $server
        if healthy "$3"; then echo "$1: up (smtp $2, api $3)"; else echo "$1: down"; fi
    done
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# A local p11kms cluster for tests and demos: one PostgreSQL server from the distribution's
# packages (initdb under DIR, its own port, its unix socket in DIR, no system service), one
# SoftHSM2 token made the way the embedded default makes it, and N gateway replicas that
# share both (token-resident key storage: every replica sees the same token directory).
#
#   scripts/cluster.sh start DIR [N]     N replicas (default 2); prints, per replica,
#                                        "replica <i> http://127.0.0.1:<port> pid <pid>"
#   scripts/cluster.sh stop DIR          stops the replicas and PostgreSQL it started
#
# Every replica accepts the dev credential test/test. P11KMS_* variables in the caller's
# environment reach every replica (e.g. P11KMS_JOB_INTERVAL_MS). Uses target/release/p11kms
# (P11KMS_BIN overrides it); build it first with `cargo build --release`.
# Layout under DIR: pg/ (PostgreSQL data, socket, log), hsm/ (softhsm2.conf, tokens, PINs),
# replica-<i>/ (data directory, stderr log), database-url (mode 600), pids.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    echo "usage: $0 start DIR [N] | stop DIR" >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
COMMAND=$1
DIR=$2

pg_bindir() {
    local v
    for v in $(ls /usr/lib/postgresql 2>/dev/null | sort -rn); do
        if [[ -x /usr/lib/postgresql/$v/bin/initdb ]]; then
            echo "/usr/lib/postgresql/$v/bin"
            return
        fi
    done
    if command -v pg_config >/dev/null && [[ -x "$(pg_config --bindir)/initdb" ]]; then
        pg_config --bindir
        return
    fi
    echo "PostgreSQL server binaries not found: apt-get install postgresql" >&2
    exit 1
}

# initdb and postgres refuse to run as root: run them as postgres (or nobody) then.
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u "$PG_USER_OS" -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

stop_cluster() {
    local pid
    if [[ -f "$DIR/pids" ]]; then
        while read -r pid; do
            kill -TERM "$pid" 2>/dev/null || true
        done <"$DIR/pids"
        for _ in $(seq 50); do
            local alive=0
            while read -r pid; do
                kill -0 "$pid" 2>/dev/null && alive=1
            done <"$DIR/pids"
            [[ $alive -eq 0 ]] && break
            sleep 0.1
        done
        while read -r pid; do
            kill -KILL "$pid" 2>/dev/null || true
        done <"$DIR/pids"
        rm -f "$DIR/pids"
    fi
    if [[ -f "$DIR/pg/data/PG_VERSION" ]]; then
        PG_USER_OS=$(cat "$DIR/pg/os-user" 2>/dev/null || echo postgres)
        as_pg "$(pg_bindir)/pg_ctl" -D "$DIR/pg/data" -m fast stop >/dev/null 2>&1 || true
    fi
}

start_cluster() {
    local n=$1
    [[ $n =~ ^[1-9][0-9]*$ ]] || usage
    local bin=${P11KMS_BIN:-$ROOT/target/release/p11kms}
    [[ -x $bin ]] || {
        echo "$bin not found: cargo build --release first" >&2
        exit 1
    }
    if [[ -e "$DIR/pids" ]]; then
        echo "$DIR already holds a running cluster ($0 stop $DIR first)" >&2
        exit 1
    fi
    mkdir -p "$DIR/pg" "$DIR/hsm"
    DIR=$(cd "$DIR" && pwd)
    chmod 755 "$DIR"

    # PostgreSQL: its own data directory, port and socket; password (SCRAM) authentication.
    local bindir port password
    bindir=$(pg_bindir)
    PG_USER_OS=$(id -un)
    if [[ $(id -u) -eq 0 ]]; then
        PG_USER_OS=postgres
        id -u postgres >/dev/null 2>&1 || PG_USER_OS=nobody
    fi
    echo "$PG_USER_OS" >"$DIR/pg/os-user"
    password=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    (umask 077 && echo "$password" >"$DIR/pg/pwfile")
    if [[ $(id -u) -eq 0 ]]; then chown -R "$PG_USER_OS" "$DIR/pg"; fi
    as_pg "$bindir/initdb" -D "$DIR/pg/data" -U p11kms --auth=scram-sha-256 --no-locale \
        -E UTF8 --pwfile="$DIR/pg/pwfile" >"$DIR/pg/initdb.log" 2>&1
    rm -f "$DIR/pg/pwfile"
    port=$(free_port)
    as_pg "$bindir/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$DIR/pg -c max_connections=200" \
        start >/dev/null
    (umask 077 && echo "postgresql://p11kms:$password@127.0.0.1:$port/postgres" >"$DIR/database-url")

    # One token, as the embedded default makes it (softhsm2.conf, token directory, PINs),
    # made once by `p11kms doctor` on DIR/hsm; the replicas then use it as an external token.
    if [[ ! -s "$DIR/hsm/user.pin" ]]; then
        env -u SOFTHSM2_CONF P11KMS_DATA_DIR="$DIR/hsm" P11KMS_LOG=error "$bin" doctor \
            >"$DIR/hsm/doctor.txt" 2>&1 || true
        [[ -s "$DIR/hsm/user.pin" ]] || {
            echo "the token was not created; see $DIR/hsm/doctor.txt" >&2
            stop_cluster
            exit 1
        }
    fi

    : >"$DIR/pids"
    local i
    for i in $(seq 1 "$n"); do
        mkdir -p "$DIR/replica-$i"
        SOFTHSM2_CONF="$DIR/hsm/softhsm2.conf" \
            P11KMS_EMBEDDED_SOFTHSM=false \
            P11KMS_PIN_FILE="$DIR/hsm/user.pin" \
            P11KMS_STORE_BACKEND=postgres \
            P11KMS_DATABASE_URL_FILE="$DIR/database-url" \
            P11KMS_DATA_DIR="$DIR/replica-$i" \
            P11KMS_LISTEN="${P11KMS_CLUSTER_LISTEN:-127.0.0.1}:0" \
            setsid "$bin" serve >"$DIR/replica-$i/stdout.log" 2>"$DIR/replica-$i/stderr.log" </dev/null &
        echo $! >>"$DIR/pids"
    done
    # Each replica prints its address once it listens.
    i=0
    while read -r pid; do
        i=$((i + 1))
        local url=""
        for _ in $(seq 600); do
            url=$(sed -n 's/^p11kms listening on \(http[s]*:\/\/[^ ]*\).*/\1/p' "$DIR/replica-$i/stdout.log" | head -1)
            [[ -n $url ]] && break
            if ! kill -0 "$pid" 2>/dev/null; then break; fi
            sleep 0.1
        done
        if [[ -z $url ]]; then
            echo "replica $i did not start; see $DIR/replica-$i/stderr.log" >&2
            tail -5 "$DIR/replica-$i/stderr.log" >&2 || true
            stop_cluster
            exit 1
        fi
        echo "replica $i $url pid $pid"
    done <"$DIR/pids"
}

case $COMMAND in
start) start_cluster "${3:-2}" ;;
stop)
    [[ -d $DIR ]] || {
        echo "$DIR does not exist" >&2
        exit 1
    }
    DIR=$(cd "$DIR" && pwd)
    stop_cluster
    ;;
*) usage ;;
esac

#!/usr/bin/env bash
# A local p11kms cluster for tests and demos: one PostgreSQL server from the distribution's
# packages (initdb under DIR, its own port, its unix socket in DIR, no system service) and N
# gateway replicas, each with its own SoftHSM2 token (the embedded default under
# DIR/replica-<i>), all enrolled in one domain (domain-key mode: key material lives in
# PostgreSQL, wrapped under the domain key D that every token holds).
#
#   scripts/cluster.sh start DIR [N] [--join-from HOLDER] [--restore FILE]
#       N replicas (default 2); prints, per replica, "replica <i> http://127.0.0.1:<port> pid <pid>".
#       A new DIR: replica 1's token makes D (`p11kms domain create`), every further token joins
#       by the ceremony (join-request on the joiner, enrol on replica 1 with the fingerprint
#       the request printed, join on the joiner), all before any replica serves.
#       A DIR that was stopped: its PostgreSQL data and tokens are reused (no new D, no
#       ceremony again); replicas beyond the former N are enrolled.
#       --restore FILE (new DIR only): load a `backup` into the new database first.
#       --join-from HOLDER: replica 1's token receives D by the ceremony from the token of
#       HOLDER (a stopped cluster's DIR, whose replica-1 token is the holder, or a replica's
#       data directory) instead of making a new D. Needs --restore (the store must name D).
#   scripts/cluster.sh stop DIR          stops the replicas and PostgreSQL it started
#   scripts/cluster.sh rotate DIR        rotates the domain key while the replicas serve: a new
#       D pending in replica 1's token (`domain rotate --prepare`), enrolled into every other
#       replica's token by the ceremony, then `domain rotate --activate`; no replica restarts
#   scripts/cluster.sh backup DIR FILE   pg_dump (custom format) of a running cluster's database
#   scripts/cluster.sh restore DIR FILE [N] [--join-from HOLDER]
#       DIR new: the same as `start DIR N --restore FILE --join-from HOLDER`.
#       DIR a cluster: stops its replicas, replaces its database by FILE (pg_restore --clean,
#       one transaction), starts them again (its tokens must hold the dump's domain key).
#
# Token mode: P11KMS_CLUSTER_KEY_STORAGE=token gives the former layout instead, one SoftHSM2
# token under DIR/hsm shared by every replica (hsm.key_storage = "token": keys are token
# objects; backups then hold no key material and a restore needs that token).
#
# Every replica accepts the dev credential test/test. P11KMS_* variables in the caller's
# environment reach every replica (e.g. P11KMS_JOB_INTERVAL_MS). Uses target/release/p11kms
# (P11KMS_BIN overrides it); build it first with `cargo build --release`.
# Layout under DIR: pg/ (PostgreSQL data, socket, log), replica-<i>/ (token: softhsm2.conf,
# tokens/, user.pin, so.pin; domain-member marker; stdout/stderr logs), ceremony/ (join
# requests and packages, ceremony log), database-url (mode 600), key-storage, replicas, pids.
# Token mode: hsm/ (the shared token) instead of a token per replica.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    cat >&2 <<EOF
usage: $0 start DIR [N] [--join-from HOLDER] [--restore FILE]
       $0 stop DIR
       $0 rotate DIR
       $0 backup DIR FILE
       $0 restore DIR FILE [N] [--join-from HOLDER]
EOF
    exit 2
}

fail() {
    echo "cluster.sh: $*" >&2
    exit 1
}

[[ $# -ge 2 ]] || usage
COMMAND=$1
DIR=$2
shift 2

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

p11kms_bin() {
    local bin=${P11KMS_BIN:-$ROOT/target/release/p11kms}
    [[ -x $bin ]] || fail "$bin not found: cargo build --release first"
    echo "$bin"
}

pg_running() {
    [[ -f "$DIR/pg/data/postmaster.pid" ]] && kill -0 "$(head -1 "$DIR/pg/data/postmaster.pid")" 2>/dev/null
}

stop_replicas() {
    local pid
    [[ -f "$DIR/pids" ]] || return 0
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
}

stop_cluster() {
    stop_replicas
    if [[ -f "$DIR/pg/data/PG_VERSION" ]]; then
        PG_USER_OS=$(cat "$DIR/pg/os-user" 2>/dev/null || echo postgres)
        as_pg "$(pg_bindir)/pg_ctl" -D "$DIR/pg/data" -m fast stop >/dev/null 2>&1 || true
    fi
}

# PostgreSQL: its own data directory, port and socket; password (SCRAM) authentication. A
# data directory left by an earlier `start` is reused (on a new port). Sets FRESH_DB=1 when
# the database was made now.
start_postgres() {
    local bindir port password
    bindir=$(pg_bindir)
    FRESH_DB=0
    mkdir -p "$DIR/pg"
    if [[ ! -f "$DIR/pg/data/PG_VERSION" ]]; then
        FRESH_DB=1
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
    else
        PG_USER_OS=$(cat "$DIR/pg/os-user")
        # The password is kept only in the connection string (mode 600).
        password=$(sed -n 's|^postgresql://p11kms:\([^@]*\)@.*|\1|p' "$DIR/database-url")
        [[ -n $password ]] || fail "$DIR/database-url holds no password"
    fi
    if ! pg_running; then
        port=$(free_port)
        as_pg "$bindir/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$DIR/pg -c max_connections=200" \
            start >/dev/null
        (umask 077 && echo "postgresql://p11kms:$password@127.0.0.1:$port/postgres" >"$DIR/database-url")
    fi
}

# Runs `p11kms ARGS...` on the token under data directory $1 (the embedded default) with
# the cluster's store; the output is appended to the ceremony log.
on_token() {
    local data_dir=$1
    shift
    env -u SOFTHSM2_CONF P11KMS_DATA_DIR="$data_dir" P11KMS_LOG=warn \
        P11KMS_STORE_BACKEND=postgres P11KMS_DATABASE_URL_FILE="$DIR/database-url" \
        "$BIN" "$@" 2>>"$DIR/ceremony/ceremony.log" | tee -a "$DIR/ceremony/ceremony.log"
}

# The ceremony: join-request on the joiner $2, enrol on the holder $1 with the fingerprint
# the request printed, join on the joiner. Writes the joiner's domain-member marker.
enrol_token() {
    local holder=$1 joiner=$2 domain=${3:-} name
    name=$(basename "$joiner")-$(date +%s%N)
    local request="$DIR/ceremony/$name-request.json" package="$DIR/ceremony/$name-package.json"
    mkdir -p "$joiner"
    echo "== join-request on $joiner" >>"$DIR/ceremony/ceremony.log"
    on_token "$joiner" domain join-request --out "$request" >/dev/null ||
        fail "join-request on $joiner failed; see $DIR/ceremony/ceremony.log"
    local fingerprint
    fingerprint=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["fingerprint"])' "$request")
    echo "== enrol on $holder" >>"$DIR/ceremony/ceremony.log"
    on_token "$holder" domain enrol --request "$request" --fingerprint "$fingerprint" \
        --out "$package" ${domain:+--domain "$domain"} >/dev/null ||
        fail "enrol on $holder failed; see $DIR/ceremony/ceremony.log"
    echo "== join on $joiner" >>"$DIR/ceremony/ceremony.log"
    local joined
    joined=$(on_token "$joiner" domain join --package "$package") ||
        fail "join on $joiner failed; see $DIR/ceremony/ceremony.log"
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["domain_id"])' "$package" \
        >"$joiner/domain-member"
    [[ -n $joined ]]
}

# The token that holds D for --join-from: a cluster DIR's replica 1, or a data directory.
holder_dir() {
    local from=$1
    if [[ -f "$from/replica-1/domain-member" ]]; then
        echo "$(cd "$from/replica-1" && pwd)"
    elif [[ -f "$from/softhsm2.conf" ]]; then
        echo "$(cd "$from" && pwd)"
    else
        fail "$from is neither a cluster directory with a domain member replica-1 nor a token's data directory"
    fi
    # The ceremony must not run inside a serving gateway on the same token.
    if [[ -f "$from/pids" ]]; then
        local pid
        while read -r pid; do
            kill -0 "$pid" 2>/dev/null && fail "$from still runs replicas ($0 stop $from first)"
        done <"$from/pids"
    fi
    return 0
}

# Domain mode: every replica's token holds D before any replica serves.
enrol_domain_tokens() {
    local n=$1 join_from=$2 i
    mkdir -p "$DIR/ceremony"
    if [[ ! -f "$DIR/replica-1/domain-member" ]]; then
        mkdir -p "$DIR/replica-1"
        if [[ -n $join_from ]]; then
            local holder
            holder=$(holder_dir "$join_from")
            enrol_token "$holder" "$DIR/replica-1"
        else
            echo "== domain create on $DIR/replica-1" >>"$DIR/ceremony/ceremony.log"
            local id
            id=$(on_token "$DIR/replica-1" domain create) ||
                fail "domain create failed (a restored store needs --join-from); see $DIR/ceremony/ceremony.log"
            echo "$id" >"$DIR/replica-1/domain-member"
        fi
    elif [[ -n $join_from ]]; then
        fail "$DIR/replica-1 is a domain member already; --join-from is for a new DIR"
    fi
    for i in $(seq 2 "$n"); do
        [[ -f "$DIR/replica-$i/domain-member" ]] || enrol_token "$DIR/replica-1" "$DIR/replica-$i"
    done
}

# Token mode: one token, as the embedded default makes it (softhsm2.conf, token directory,
# PINs), made once by `p11kms doctor` on DIR/hsm; the replicas use it as an external token.
make_shared_token() {
    mkdir -p "$DIR/hsm"
    if [[ ! -s "$DIR/hsm/user.pin" ]]; then
        env -u SOFTHSM2_CONF P11KMS_DATA_DIR="$DIR/hsm" P11KMS_LOG=error "$BIN" doctor \
            >"$DIR/hsm/doctor.txt" 2>&1 || true
        [[ -s "$DIR/hsm/user.pin" ]] || fail "the token was not created; see $DIR/hsm/doctor.txt"
    fi
}

# Waits for replica $1 (pid $2) to print its address; prints it, or stops everything.
wait_ready() {
    local i=$1 pid=$2 url=""
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
    echo "$url"
}

start_replicas() {
    local n=$1 storage i pid
    storage=$(cat "$DIR/key-storage")
    local urls=()
    : >"$DIR/pids"
    echo "$n" >"$DIR/replicas"
    for i in $(seq 1 "$n"); do
        mkdir -p "$DIR/replica-$i"
        if [[ $storage == token ]]; then
            SOFTHSM2_CONF="$DIR/hsm/softhsm2.conf" \
                P11KMS_EMBEDDED_SOFTHSM=false \
                P11KMS_PIN_FILE="$DIR/hsm/user.pin" \
                P11KMS_KEY_STORAGE=token \
                P11KMS_STORE_BACKEND=postgres \
                P11KMS_DATABASE_URL_FILE="$DIR/database-url" \
                P11KMS_DATA_DIR="$DIR/replica-$i" \
                P11KMS_LISTEN="${P11KMS_CLUSTER_LISTEN:-127.0.0.1}:0" \
                setsid "$BIN" serve >"$DIR/replica-$i/stdout.log" 2>"$DIR/replica-$i/stderr.log" </dev/null &
            pid=$!
            echo "$pid" >>"$DIR/pids"
            # One at a time on the shared token: SoftHSM2 rewrites its token file at every
            # login, and two replicas logging in at once were seen to fail
            # (C_GetTokenInfo: CKR_GENERAL_ERROR).
            urls[i]=$(wait_ready "$i" "$pid") || exit 1
        else
            # The embedded default on the replica's own token (its start-up repair of a torn
            # token file is right here: the token is this process's alone).
            env -u SOFTHSM2_CONF \
                P11KMS_KEY_STORAGE=domain \
                P11KMS_STORE_BACKEND=postgres \
                P11KMS_DATABASE_URL_FILE="$DIR/database-url" \
                P11KMS_DATA_DIR="$DIR/replica-$i" \
                P11KMS_LISTEN="${P11KMS_CLUSTER_LISTEN:-127.0.0.1}:0" \
                setsid "$BIN" serve >"$DIR/replica-$i/stdout.log" 2>"$DIR/replica-$i/stderr.log" </dev/null &
            echo $! >>"$DIR/pids"
        fi
    done
    i=0
    while read -r pid; do
        i=$((i + 1))
        [[ -n ${urls[i]:-} ]] || urls[i]=$(wait_ready "$i" "$pid") || exit 1
        echo "replica $i ${urls[i]} pid $pid"
    done <"$DIR/pids"
}

restore_dump() {
    local file=$1 clean=$2
    [[ -f $file ]] || fail "$file does not exist"
    local args=(--no-owner --no-privileges --exit-on-error --single-transaction)
    [[ $clean -eq 1 ]] && args+=(--clean --if-exists)
    "$(pg_bindir)/pg_restore" "${args[@]}" -d "$(cat "$DIR/database-url")" "$file" ||
        fail "pg_restore of $file failed"
}

start_cluster() {
    local n=2 join_from="" restore=""
    if [[ $# -gt 0 && $1 != --* ]]; then
        n=$1
        shift
    fi
    while [[ $# -gt 0 ]]; do
        case $1 in
        --join-from) join_from=${2:?--join-from needs a directory}; shift 2 ;;
        --restore) restore=${2:?--restore needs a file}; shift 2 ;;
        *) usage ;;
        esac
    done
    [[ $n =~ ^[1-9][0-9]*$ ]] || usage
    BIN=$(p11kms_bin)
    [[ -z $restore ]] || restore=$(cd "$(dirname "$restore")" && pwd)/$(basename "$restore")
    if [[ -e "$DIR/pids" ]]; then
        fail "$DIR already holds a running cluster ($0 stop $DIR first)"
    fi
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    chmod 755 "$DIR"
    local storage=${P11KMS_CLUSTER_KEY_STORAGE:-domain}
    [[ -f "$DIR/key-storage" ]] && storage=$(cat "$DIR/key-storage")
    [[ $storage == domain || $storage == token ]] ||
        fail "P11KMS_CLUSTER_KEY_STORAGE must be domain or token, not $storage"
    if [[ $storage == token && -n $join_from ]]; then
        fail "--join-from is for domain mode"
    fi
    if [[ -n $join_from && -z $restore && ! -f "$DIR/replica-1/domain-member" ]]; then
        fail "--join-from needs --restore FILE: replicas serve only once the store names the domain key"
    fi

    start_postgres
    echo "$storage" >"$DIR/key-storage"
    if [[ -n $restore ]]; then
        if [[ $FRESH_DB -ne 1 ]]; then
            stop_cluster
            fail "--restore is for a new DIR; use $0 restore $DIR FILE on an existing cluster"
        fi
        (restore_dump "$restore" 0) || {
            stop_cluster
            exit 1
        }
    fi
    if [[ $storage == domain ]]; then
        (enrol_domain_tokens "$n" "$join_from") || {
            stop_cluster
            exit 1
        }
    else
        (make_shared_token) || {
            stop_cluster
            exit 1
        }
    fi
    start_replicas "$n"
}

backup_cluster() {
    local file=${1:-}
    [[ -n $file ]] || usage
    [[ -f "$DIR/database-url" ]] && pg_running || fail "$DIR has no running PostgreSQL ($0 start $DIR first)"
    [[ ! -e $file ]] || fail "$file exists"
    local started=$SECONDS
    (umask 077 && "$(pg_bindir)/pg_dump" --format=custom --no-owner --no-privileges \
        -d "$(cat "$DIR/database-url")" -f "$file") || fail "pg_dump failed"
    # What the dump needs to open anything: a token holding these domain keys.
    local domains
    domains=$("$(pg_bindir)/psql" -qAt -d "$(cat "$DIR/database-url")" \
        -c "SELECT string_agg(id || ' (' || state || ')', ', ' ORDER BY created_at) FROM domain_keys" 2>/dev/null || true)
    echo "backup $file: $(stat -c %s "$file") bytes in $((SECONDS - started)) s; domain keys: ${domains:-none}"
}

# A domain-key rotation while the replicas serve: a new D made in replica 1's token and
# recorded as pending, enrolled into every other replica's token by the ceremony, then
# activated (the store's blobs rewrapped under it, the old D retired). No replica restarts.
rotate_cluster() {
    [[ $(cat "$DIR/key-storage" 2>/dev/null) == domain ]] || fail "$DIR is not a domain-mode cluster"
    BIN=$(p11kms_bin)
    DIR=$(cd "$DIR" && pwd)
    local n i prepared pending started=$SECONDS
    n=$(cat "$DIR/replicas" 2>/dev/null || echo 2)
    echo "== rotate --prepare on $DIR/replica-1" >>"$DIR/ceremony/ceremony.log"
    prepared=$(on_token "$DIR/replica-1" domain rotate --prepare) ||
        fail "rotate --prepare failed; see $DIR/ceremony/ceremony.log"
    pending=$(sed -n 's/^pending //p' <<<"$prepared")
    [[ -n $pending ]] || fail "rotate --prepare named no pending domain key"
    for i in $(seq 2 "$n"); do
        enrol_token "$DIR/replica-1" "$DIR/replica-$i" "$pending"
    done
    echo "== rotate --activate on $DIR/replica-1" >>"$DIR/ceremony/ceremony.log"
    on_token "$DIR/replica-1" domain rotate --activate ||
        fail "rotate --activate failed; see $DIR/ceremony/ceremony.log"
    echo "$pending" >"$DIR/replica-1/domain-member"
    echo "rotated to $pending in $((SECONDS - started)) s"
}

restore_cluster() {
    local file=${1:-}
    [[ -n $file ]] || usage
    shift
    if [[ ! -f "$DIR/pg/data/PG_VERSION" ]]; then
        start_cluster "$@" --restore "$file"
        return
    fi
    [[ $# -eq 0 ]] || fail "$DIR is a cluster already: restore takes no N or --join-from there"
    BIN=$(p11kms_bin)
    DIR=$(cd "$DIR" && pwd)
    local n
    n=$(cat "$DIR/replicas" 2>/dev/null || echo 2)
    stop_replicas
    start_postgres
    restore_dump "$file" 1
    start_replicas "$n"
}

case $COMMAND in
start) start_cluster "$@" ;;
stop)
    [[ -d $DIR ]] || fail "$DIR does not exist"
    DIR=$(cd "$DIR" && pwd)
    stop_cluster
    ;;
backup)
    [[ -d $DIR ]] || fail "$DIR does not exist"
    DIR=$(cd "$DIR" && pwd)
    backup_cluster "$@"
    ;;
restore) restore_cluster "$@" ;;
rotate)
    [[ -d $DIR ]] || fail "$DIR does not exist"
    rotate_cluster
    ;;
*) usage ;;
esac

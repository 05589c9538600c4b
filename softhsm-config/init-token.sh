#!/usr/bin/env bash
# Create a SoftHSM2 token for p11kms by hand.
#
#   softhsm-config/init-token.sh [--dir DIR] [--label LABEL] [--log-level LEVEL]
#
#   --dir DIR        where to put softhsm2.conf and tokens/  (default: ./softhsm)
#   --label LABEL    token label (default: $P11KMS_TOKEN_LABEL or "p11kms")
#   --log-level L    SoftHSM2 log level: ERROR, WARNING, INFO, DEBUG (default ERROR)
#
# PINs are never taken from this script's command line (where `ps` would show
# them).  They come from the environment or from files:
#
#   user PIN:  $P11KMS_PIN, else the file named by $P11KMS_PIN_FILE,
#              else a new random PIN written to DIR/user.pin (mode 0600)
#   SO PIN:    $P11KMS_SO_PIN, else the file named by $P11KMS_SO_PIN_FILE,
#              else a new random PIN written to DIR/so.pin (mode 0600)
#
# The user PIN variables are the ones `p11kms serve` reads, so the same
# environment serves both.  A PIN file holds the PIN alone; a trailing newline
# is ignored.
#
# Caveat: softhsm2-util itself only takes PINs as arguments (it reads them from
# a terminal otherwise), so they are visible in the process table for the
# fraction of a second that softhsm2-util runs.  Run this on a machine where
# other local users are trusted, or with /proc mounted hidepid=2.
#
# At the end it prints the slot that holds the new token and the settings to
# give p11kms (see README.md beside this script).

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="./softhsm"
LABEL="${P11KMS_TOKEN_LABEL:-p11kms}"
LOG_LEVEL="ERROR"

usage() { sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while (( $# > 0 )); do
    case "$1" in
        --dir) DIR="$2"; shift 2 ;;
        --label) LABEL="$2"; shift 2 ;;
        --log-level) LOG_LEVEL="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --pin*|--so-pin*) echo "PINs are not accepted as arguments; use P11KMS_PIN / P11KMS_PIN_FILE / P11KMS_SO_PIN / P11KMS_SO_PIN_FILE" >&2; exit 2 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done

case "$LOG_LEVEL" in ERROR|WARNING|INFO|DEBUG) ;; *) echo "bad --log-level $LOG_LEVEL" >&2; exit 2 ;; esac
command -v softhsm2-util >/dev/null || { echo "softhsm2-util not found: apt-get install softhsm2" >&2; exit 1; }

umask 077
mkdir -p "$DIR/tokens"
DIR="$(cd "$DIR" && pwd)"
CONF="$DIR/softhsm2.conf"

# Render the configuration (| as sed delimiter: paths contain /).
sed -e "s|@TOKENDIR@|$DIR/tokens|" -e "s|@LOG_LEVEL@|$LOG_LEVEL|" \
    "$HERE/softhsm2.conf.template" > "$CONF"
export SOFTHSM2_CONF="$CONF"

new_pin() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }

# read_pin VAR FILEVAR DEFAULT_FILE: print the PIN; create DEFAULT_FILE if neither is set.
read_pin() {
    local var="$1" filevar="$2" default_file="$3" pin
    if [[ -n "${!var:-}" ]]; then
        pin="${!var}"
    elif [[ -n "${!filevar:-}" ]]; then
        [[ -r "${!filevar}" ]] || { echo "$filevar=${!filevar}: not readable" >&2; return 1; }
        pin="$(head -n1 "${!filevar}" | tr -d '\r\n')"
    else
        pin="$(new_pin)"
        printf '%s\n' "$pin" > "$default_file"
        chmod 600 "$default_file"
        echo "generated $var into $default_file" >&2
    fi
    if (( ${#pin} < 4 || ${#pin} > 255 )); then
        echo "$var must be 4 to 255 characters long" >&2
        return 1
    fi
    printf '%s' "$pin"
}

# find_slot: print the slot id of the token labelled $LABEL, if there is one.
find_slot() {
    softhsm2-util --show-slots | awk -v label="$LABEL" '
        /^Slot [0-9]+/ { slot = $2 }
        /^[[:space:]]*Label:/ {
            sub(/^[[:space:]]*Label:[[:space:]]*/, ""); sub(/[[:space:]]+$/, "")
            if ($0 == label) { print slot; exit }
        }'
}

SLOT="$(find_slot)"
if [[ -n "$SLOT" ]]; then
    echo "a token labelled '$LABEL' already exists under $DIR/tokens; PINs left as they are" >&2
else
    USER_PIN="$(read_pin P11KMS_PIN P11KMS_PIN_FILE "$DIR/user.pin")"
    SO_PIN="$(read_pin P11KMS_SO_PIN P11KMS_SO_PIN_FILE "$DIR/so.pin")"
    softhsm2-util --init-token --free --label "$LABEL" --pin "$USER_PIN" --so-pin "$SO_PIN" >/dev/null
    unset USER_PIN SO_PIN
    SLOT="$(find_slot)"
    [[ -n "$SLOT" ]] || { echo "token '$LABEL' not found after initialisation" >&2; exit 1; }
fi

if [[ -n "${P11KMS_PIN:-}" ]]; then
    PIN_HINT="export P11KMS_PIN=...            # the user PIN you gave in P11KMS_PIN"
elif [[ -n "${P11KMS_PIN_FILE:-}" ]]; then
    PIN_HINT="export P11KMS_PIN_FILE=$P11KMS_PIN_FILE"
else
    PIN_HINT="export P11KMS_PIN_FILE=$DIR/user.pin"
fi

echo "token '$LABEL' is in slot $SLOT"
cat <<MSG

Run p11kms against it with:
  export SOFTHSM2_CONF=$CONF
  export P11KMS_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so
  export P11KMS_TOKEN_LABEL=$LABEL
  $PIN_HINT
  p11kms serve
MSG

#!/usr/bin/env bash
# Make sure the system packages the test suite needs are present: today the PostgreSQL server
# binaries (initdb, pg_ctl) from Debian's `postgresql` package, for the storage tests that run on
# both SQLite and PostgreSQL. Idempotent and fast when everything is there; safe to run repeatedly.
# The tests start their own throwaway clusters: this script never starts a server.
#
# Usage: ensure-test-deps.sh [chromium] [softhsm2] [postgresql]
# With no argument, everything (`make test`); with arguments, only those (`make bench` asks for
# postgresql: bench/issuance.py starts a throwaway cluster from tests/support/postgres.py).
set -euo pipefail

WANTED="${*:-chromium softhsm2 postgresql}"
for item in $WANTED; do
    case "$item" in
        chromium|softhsm2|postgresql) ;;
        *) echo "ensure-test-deps: unknown dependency '$item' (chromium, softhsm2, postgresql)" >&2; exit 2 ;;
    esac
done
wants() {
    case " $WANTED " in *" $1 "*) return 0 ;; esac
    return 1
}

find_pg_bin() {
    local dir
    if [ -n "${CARTERA_PG_BIN:-}" ] && [ -x "${CARTERA_PG_BIN}/initdb" ]; then
        echo "${CARTERA_PG_BIN}"
        return 0
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

# Install Debian packages: as root directly, otherwise through `sudo -n` (never a password prompt).
# Returns 1, saying why, when neither is possible.
apt_install() {
    local -a run
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "ensure-test-deps: no apt-get here; install $* with this system's package manager" >&2
        return 1
    fi
    if [ "$(id -u)" -eq 0 ]; then
        run=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        run=(sudo -n env DEBIAN_FRONTEND=noninteractive)
        echo "ensure-test-deps: not root; installing through sudo -n"
    else
        echo "ensure-test-deps: not root and sudo needs a password (or is missing): cannot install $*." >&2
        echo "  Install as root:  apt-get install -y --no-install-recommends $*" >&2
        return 1
    fi
    echo "ensure-test-deps: installing Debian package(s) $* (apt-get update, then install)"
    export DEBIAN_FRONTEND=noninteractive
    "${run[@]}" apt-get update -qq
    "${run[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Debian's Chromium, for the verifier desk page tests (Playwright drives /usr/bin/chromium through
# executable_path; `playwright install` and its downloaded browsers are never used).
if wants chromium && [ ! -x /usr/bin/chromium ]; then
    apt_install chromium || { echo "ensure-test-deps: /usr/bin/chromium is missing" >&2; exit 1; }
fi

# Debian's SoftHSM2, the PKCS#11 token of the HSM key tests (tests/hsm make throwaway tokens in a temp
# dir through SOFTHSM2_CONF; the package's own /var/lib/softhsm is never used).
if wants softhsm2 && { [ ! -e /usr/lib/softhsm/libsofthsm2.so ] || ! command -v softhsm2-util >/dev/null 2>&1; }; then
    apt_install softhsm2 || { echo "ensure-test-deps: SoftHSM2 is missing" >&2; exit 1; }
fi

if ! wants postgresql; then
    exit 0
fi

if [ -n "${CARTERA_TEST_POSTGRES_URL:-}" ]; then
    echo "ensure-test-deps: using the PostgreSQL server at CARTERA_TEST_POSTGRES_URL; nothing to install"
    exit 0
fi

if pg_bin=$(find_pg_bin); then
    echo "ensure-test-deps: PostgreSQL binaries present in $pg_bin"
    exit 0
fi

if ! apt_install postgresql; then
    echo "ensure-test-deps: PostgreSQL server binaries (initdb, pg_ctl) are missing; install them and set" \
         "CARTERA_PG_BIN, or point CARTERA_TEST_POSTGRES_URL at a server" >&2
    exit 1
fi

if pg_bin=$(find_pg_bin); then
    echo "ensure-test-deps: installed PostgreSQL; binaries in $pg_bin"
    # The package may have created and started a default cluster: the tests do not need it.
    exit 0
fi
echo "ensure-test-deps: postgresql installed but initdb/pg_ctl not found under /usr/lib/postgresql" >&2
exit 1

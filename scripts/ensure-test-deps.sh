#!/usr/bin/env bash
# Make sure the system packages the test suite needs are present: today the PostgreSQL server
# binaries (initdb, pg_ctl) from Debian's `postgresql` package, for the storage tests that run on
# both SQLite and PostgreSQL. Idempotent and fast when everything is there; safe to run repeatedly.
# The tests start their own throwaway clusters: this script never starts a server.
set -euo pipefail

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

# Debian's Chromium, for the verifier desk page tests (Playwright drives /usr/bin/chromium through
# executable_path; `playwright install` and its downloaded browsers are never used).
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "ensure-test-deps: installing Debian package chromium (apt-get update, then install)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "ensure-test-deps: /usr/bin/chromium is missing; as root: apt-get install -y chromium" >&2
        exit 1
    fi
fi

# Debian's SoftHSM2, the PKCS#11 token of the HSM key tests (tests/hsm make throwaway tokens in a temp
# dir through SOFTHSM2_CONF; the package's own /var/lib/softhsm is never used).
if [ ! -e /usr/lib/softhsm/libsofthsm2.so ] || ! command -v softhsm2-util >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "ensure-test-deps: installing Debian package softhsm2 (apt-get update, then install)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends softhsm2 >/dev/null
    else
        echo "ensure-test-deps: SoftHSM2 is missing; as root: apt-get install -y softhsm2" >&2
        exit 1
    fi
fi

if [ -n "${CARTERA_TEST_POSTGRES_URL:-}" ]; then
    echo "ensure-test-deps: using the PostgreSQL server at CARTERA_TEST_POSTGRES_URL; nothing to install"
    exit 0
fi

if pg_bin=$(find_pg_bin); then
    echo "ensure-test-deps: PostgreSQL binaries present in $pg_bin"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-test-deps: PostgreSQL server binaries (initdb, pg_ctl) are missing." >&2
    echo "  Install Debian's package as root:  apt-get install -y --no-install-recommends postgresql" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-test-deps: no apt-get here; install the PostgreSQL server (initdb, pg_ctl) and set CARTERA_PG_BIN" >&2
    exit 1
fi

echo "ensure-test-deps: installing Debian package postgresql (apt-get update, then install)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null

if pg_bin=$(find_pg_bin); then
    echo "ensure-test-deps: installed PostgreSQL; binaries in $pg_bin"
    # The package may have created and started a default cluster: the tests do not need it.
    exit 0
fi
echo "ensure-test-deps: postgresql installed but initdb/pg_ctl not found under /usr/lib/postgresql" >&2
exit 1

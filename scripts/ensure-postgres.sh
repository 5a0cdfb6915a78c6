#!/usr/bin/env bash
# Make sure the PostgreSQL server programs the test suite needs (initdb, pg_ctl; psql comes with them) exist.
# The tests start their own throwaway cluster (metronome_suger_tests/postgres.py); this script only installs
# Debian's packages when the programs are missing, WITHOUT creating or starting Debian's default `main` cluster.
# Idempotent: when the programs are found it prints one line and exits.
set -euo pipefail

find_bin_dir() {
    local initdb dir
    if initdb=$(command -v initdb) && command -v pg_ctl >/dev/null; then
        dirname "$initdb"
        return 0
    fi
    # Debian/Ubuntu keep them off PATH, in /usr/lib/postgresql/<version>/bin (newest version first).
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

if dir=$(find_bin_dir); then
    echo "PostgreSQL for the tests: initdb and pg_ctl found in $dir"
    exit 0
fi

echo "PostgreSQL's initdb/pg_ctl not found: installing Debian's postgresql for the tests"

# shellcheck source=scripts/apt-lib.sh
source "$(dirname "$0")/apt-lib.sh"
require_apt "install the PostgreSQL server programs (initdb, pg_ctl, psql) yourself, on PATH or in
/usr/lib/postgresql/<version>/bin" "apt-get install postgresql-15 (or postgresql)"

# No default cluster: postgresql-NN's postinst runs `pg_createcluster NN main` (and starts it) unless
# /etc/postgresql-common/createcluster.conf says create_main_cluster = false. postgresql-common installs that
# file through ucf; UCF_FORCE_CONFFOLD (and dpkg's --force-confold) keep ours when it comes after us.
CONF=/etc/postgresql-common/createcluster.conf
if ! grep -Eq '^[[:space:]]*create_main_cluster[[:space:]]*=[[:space:]]*false' "$CONF" 2>/dev/null; then
    echo "setting create_main_cluster = false in $CONF (no default cluster; the tests make their own)"
    "${SUDO[@]}" mkdir -p "$(dirname "$CONF")"
    if [ -f "$CONF" ] && grep -Eq '^[[:space:]]*#?[[:space:]]*create_main_cluster' "$CONF"; then
        "${SUDO[@]}" sed -i -E 's/^[[:space:]]*#?[[:space:]]*create_main_cluster.*/create_main_cluster = false/' "$CONF"
    else
        echo 'create_main_cluster = false' | "${SUDO[@]}" tee -a "$CONF" >/dev/null
    fi
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
pkg=postgresql-15
if ! apt-cache show "$pkg" >/dev/null 2>&1; then
    pkg=postgresql  # another release: its supported version
fi
clusters() { pg_lsclusters -h 2>/dev/null | awk '{print $1 " " $2}' || true; }
before=$(clusters)
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$pkg"
# Belt and braces: a cluster this install created anyway (none can predate it: the binaries were missing) goes.
while read -r version name; do
    [ -n "$version" ] || continue
    if ! grep -qx "$version $name" <<<"$before"; then
        echo "dropping the default cluster $version/$name the package created (the tests make their own)"
        "${SUDO[@]}" pg_dropcluster --stop "$version" "$name"
    fi
done <<<"$(clusters)"

if dir=$(find_bin_dir); then
    echo "PostgreSQL for the tests: installed $pkg, initdb and pg_ctl in $dir"
else
    echo "error: installed $pkg but still no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin" >&2
    exit 1
fi

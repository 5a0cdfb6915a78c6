# Sourced by scripts/ensure-*.sh: what installing a Debian package for the tests needs.
# require_apt MISSING_APT_HINT ROOT_HINT: exits 1 with a message unless apt-get exists; sets SUDO to () as root,
# (sudo) otherwise, and exits 1 with ROOT_HINT when neither root nor sudo.
require_apt() {
    if ! command -v apt-get >/dev/null; then
        echo "error: no apt-get here; $1" >&2
        exit 1
    fi
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null; then
            SUDO=(sudo)
        else
            echo "error: not root and no sudo: run as root: $2" >&2
            exit 1
        fi
    fi
}

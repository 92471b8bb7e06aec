# Sourced by .ci/setup_*.sh. `apt_install SCRIPT PACKAGE...` installs Debian packages with apt-get, as
# root or through password-less sudo. Where it cannot (no apt-get, not root, no network, a failed install)
# it says why in one line and returns 1; it never ends the calling script, whose own last line then says
# what is still missing and which tests will fail for it in CI.
apt_install() {
    local script=$1
    shift
    local packages=("$@") sudo=()
    say() { echo "$script: $*"; }
    if ! command -v apt-get >/dev/null 2>&1; then
        say "apt-get not available; not installing ${packages[*]}"
        return 1
    fi
    if [[ "$(id -u)" != 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
            sudo=(sudo -n)
        else
            say "not root and no password-less sudo; not installing ${packages[*]}"
            return 1
        fi
    fi
    say "installing ${packages[*]} with apt-get"
    if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq; then
        say "apt-get update failed; not installing ${packages[*]}"
        return 1
    fi
    if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}"; then
        say "apt-get install ${packages[*]} failed"
        return 1
    fi
}

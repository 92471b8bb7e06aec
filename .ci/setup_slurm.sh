#!/usr/bin/env bash
# Installs Debian's slurm-wlm and munge for the SLURM launch test (tests/test_launch_script.py), which
# starts a private one-node cluster of its own, and iproute2's `ip` and util-linux's `nsenter` for the
# two-node test (tests/test_two_nodes.py: one network namespace per node). Idempotent: installs only what
# is missing.
# Never fails the CI: where packages cannot be installed (no apt, not root, no network) it says why and
# exits 0, and the SLURM test then skips with its reason.
set -u

log() { echo "setup_slurm: $*"; }

on_path() { PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1; }

PACKAGES=()
if on_path slurmctld && on_path slurmd && on_path munged && on_path sbatch; then
    log "slurm-wlm and munge already installed ($(PATH="$PATH:/usr/sbin" slurmctld -V 2>/dev/null || echo 'version unknown'))"
else
    PACKAGES+=(slurm-wlm munge)
fi
on_path ip || PACKAGES+=(iproute2)
on_path nsenter || PACKAGES+=(util-linux)
if (( ${#PACKAGES[@]} == 0 )); then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get not available; not installing ${PACKAGES[*]} (the SLURM tests will skip)"
    exit 0
fi
SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        log "not root and no password-less sudo; not installing ${PACKAGES[*]} (the SLURM tests will skip)"
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
log "installing ${PACKAGES[*]} with apt-get"
if ! "${SUDO[@]}" apt-get update -qq; then
    log "apt-get update failed; not installing ${PACKAGES[*]} (the SLURM tests will skip)"
    exit 0
fi
if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; then
    log "apt-get install ${PACKAGES[*]} failed; the SLURM tests will skip"
    exit 0
fi
if on_path slurmctld; then
    log "installed: $(PATH="$PATH:/usr/sbin" slurmctld -V 2>/dev/null)"
else
    log "apt-get finished but slurmctld is still missing; the SLURM test will skip"
fi
exit 0

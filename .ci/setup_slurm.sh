#!/usr/bin/env bash
# Installs Debian's slurm-wlm and munge for the SLURM launch test (tests/test_launch_script.py), which
# starts a private one-node cluster of its own, and iproute2's `ip` and util-linux's `nsenter` for the
# two-node test (tests/test_two_nodes.py: one network namespace per node). Idempotent: installs only what
# is missing.
# Never fails the CI: where packages cannot be installed (no apt, not root, no network) it says why and
# exits 0, and the SLURM tests then skip with their reason.
set -u
source "$(dirname "$0")/apt_install.sh"

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
apt_install setup_slurm "the SLURM tests" "${PACKAGES[@]}" || exit 0
if on_path slurmctld; then
    log "installed: $(PATH="$PATH:/usr/sbin" slurmctld -V 2>/dev/null)"
else
    log "apt-get finished but slurmctld is still missing; the SLURM test will skip"
fi
exit 0

#!/usr/bin/env bash
# Installs Debian's slurm-wlm and munge for the SLURM tests (marked `slurm`: tests/test_launch_script.py,
# tests/test_preemption.py, tests/test_two_nodes.py), which start private clusters of their own, and
# iproute2's `ip` and util-linux's `nsenter` for the two-node test (tests/test_two_nodes.py: one network
# namespace per node). Idempotent: installs only what is missing.
# Exits 0 even where it cannot install (no apt, not root, no network), so that lint and the other tests
# still run; under CI=true the tests that need what is missing then fail, naming it (tests/tiers.py), and
# this script's last line says which.
set -u
source "$(dirname "$0")/apt_install.sh"

log() { echo "setup_slurm: $*"; }

on_path() { PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1; }

# What tests/slurm_cluster.py (DAEMONS, CLIENTS) and tests/node_namespaces.py (TOOLS) look for.
SLURM_PROGRAMS=(munged slurmctld slurmd sinfo sbatch scontrol scancel squeue srun)
NETWORK_TOOLS=(ip nsenter)

missing() { for name in "$@"; do on_path "$name" || echo "$name"; done; }

PACKAGES=()
[[ -z "$(missing "${SLURM_PROGRAMS[@]}")" ]] || PACKAGES+=(slurm-wlm munge)
on_path ip || PACKAGES+=(iproute2)
on_path nsenter || PACKAGES+=(util-linux)
if (( ${#PACKAGES[@]} > 0 )); then
    apt_install setup_slurm "${PACKAGES[@]}"
fi

# The last line: what the tests will find.
slurm_missing=$(missing "${SLURM_PROGRAMS[@]}" | tr '\n' ' ')
all_missing="$slurm_missing$(missing "${NETWORK_TOOLS[@]}" | tr '\n' ' ')"
if [[ -z "$all_missing" ]]; then
    log "ready: $(PATH="$PATH:/usr/sbin" slurmctld -V 2>/dev/null || echo 'slurm, version unknown'), munge, ip and nsenter"
elif [[ -z "$slurm_missing" ]]; then
    log "NOT READY: ${all_missing% } missing: the two-node tests (tests/test_two_nodes.py) will FAIL under CI=true"
else
    log "NOT READY: ${all_missing% } missing: every SLURM test (marked slurm) will FAIL under CI=true"
fi
exit 0

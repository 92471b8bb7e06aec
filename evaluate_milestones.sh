#!/usr/bin/env bash
#SBATCH --job-name=llava-curves
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=logs/%x_%A_%a.out
#
# Evaluates a training run's word milestones and final model with `python -m llava.eval.curves`: under a
# SLURM job array one task per checkpoint, elsewhere every checkpoint, NPROC at a time. The evaluation's
# arguments (--babylm, --minimal-pairs, --captions ...) follow the run's folder, as curves takes them.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: [NPROC=N] [PYTHON=...] bash|sbatch [--array=0-(N-1)] evaluate_milestones.sh RUN_DIR [curves arguments ...]

  # a SLURM job array, one task per checkpoint (add --gpus=1 where the cluster has GPUs), then the plot:
  N=$(python -m llava.eval.curves RUN_DIR --list-checkpoints | wc -l)
  mkdir -p logs && sbatch --array=0-$((N - 1)) evaluate_milestones.sh RUN_DIR --babylm blimp=DATA/blimp_fast
  python -m llava.eval.curves RUN_DIR --babylm blimp=DATA/blimp_fast     # evaluates nothing again: the plot

  # this machine: every checkpoint, two processes at a time, then the plot and the table
  NPROC=2 bash evaluate_milestones.sh RUN_DIR --babylm blimp=DATA/blimp_fast

A task evaluates only what its checkpoint still lacks (a rerun of the array redoes nothing that is done);
tasks of one run append to its curves.jsonl in turn. Paths are taken from the folder sbatch or bash was
started in.
USAGE
}

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
    usage
    [[ $# -ge 1 ]] && exit 0 || exit 2
fi
RUN_DIR=$1
shift
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=$PWD/.venv/bin/python; else PYTHON=python; fi
fi

if [[ -n "${SLURM_ARRAY_TASK_ID:-}" ]]; then
    exec "$PYTHON" -m llava.eval.curves "$RUN_DIR" --checkpoint "$SLURM_ARRAY_TASK_ID" --no-plot "$@"
fi
"$PYTHON" -m llava.eval.curves "$RUN_DIR" --list-checkpoints \
    | xargs -r -P "${NPROC:-1}" -I{} "$PYTHON" -m llava.eval.curves "$RUN_DIR" --checkpoint {} --no-plot "$@"
exec "$PYTHON" -m llava.eval.curves "$RUN_DIR" "$@"

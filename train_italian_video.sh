#!/usr/bin/env bash
#SBATCH --job-name=llava-italian-video
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --output=logs/%x_%j.out
# A requeued job (see "Stopping and requeueing" below) writes on in the same log, keeps its job id.
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#
# Trains LLaVA on an Italian GPT-2 (BAMBI): video+text captioning through a frozen DINOv2, the fast/slow
# TokenPacker and an MLP projector, or the language model alone on the captions. The run's settings are a
# recipe file and flags; this script only launches: under SLURM on every node of the job (srun + torchrun),
# or with torchrun on this machine. `bash train_italian_video.sh --help` says how.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: [VARIABLE=value ...] sbatch|bash train_italian_video.sh [--flag value ...]

Runs `python -m llava.train.train --config RECIPE [--flag value ...]` on every node of a SLURM job (srun +
torchrun, c10d rendezvous on the first node) or, outside SLURM, with torchrun on this machine. The recipe
holds the run's settings (recipes/italian_video.yaml: the headline run); a flag after the script's name
wins over the recipe's value (`--config OTHER.yaml` replaces the recipe). The settings and their flags:
docs/settings.md, or `python -m llava.train.train --help`.

  mkdir -p logs && sbatch train_italian_video.sh                    # the recipe as it is
  sbatch train_italian_video.sh --model_name_or_path models/bambi --output_dir checkpoints/run2
  sbatch --nodes=4 train_italian_video.sh                            # several nodes
  MODE=text sbatch train_italian_video.sh                            # recipes/italian_text.yaml
  NPROC=2 bash train_italian_video.sh --max_steps 10                 # no SLURM: torchrun --standalone

Relative paths are taken from this script's folder (under sbatch too; LLAVA_HOME overrides it). The
logs/ folder of the #SBATCH --output line must exist before sbatch. Started again with the same settings,
a run resumes from the newest complete checkpoint in its output folder. Before anything starts, the
training's preflight checks the recipe, every flag, the model folder, every data file and sample, the
folders and the output folder (one line; status 2: a variable or flag, 1: a path or a data file).

Launching variables (defaults in brackets):
  MODE                    video | text: the recipe recipes/italian_$MODE.yaml     [video]
  RECIPE                  the recipe file                                         [recipes/italian_$MODE.yaml]
  GPUS_PER_NODE (= NPROC) training processes per node                             [visible GPUs, or 1]
  LAUNCHER                auto | slurm | standalone                               [auto: slurm inside a job]
  MASTER_ADDR, MASTER_PORT  rendezvous under SLURM (the first node hosts it)       [its NodeAddr / 20000 + job id % 20000]
  REQUEUE                 1: a SLURM job told to stop requeues itself; 0: no      [1]
  MAX_REQUEUES            restarts after which it no longer requeues itself       [10]
  STOP_TIMEOUT            seconds torchrun gives its ranks, once signalled, to    [300]
                          finish the step, save and exit before it kills them
  PREFLIGHT               1: check everything before launching; 0: skip           [1]
  PYTHON                  interpreter                                             [.venv/bin/python if present]
  TRAIN_MODULE            module torchrun starts                                  [llava.train.train]
  LLAVA_HOME              folder to run from                                      [this script's folder]
  SBATCH_SIGNAL           read by sbatch: the warning before the time limit       [B:USR1@300]
A variable that used to set a training option (LM_PATH, OUTPUT_DIR, SAVE_EVERY_MINUTES, ...) stops the
script with a line naming the flag that replaces it.

Stopping and requeueing. SLURM sends the batch shell SIGUSR1 300 s before the time limit (#SBATCH
--signal); the ranks finish their optimizer step, save one complete checkpoint and stop, and the job
requeues itself (same job id) and resumes from it. A preemption notice (scancel --signal=USR1 JOBID, or
--signal=TERM) does the same. Not requeued: a finished or failed run, a plain scancel, the time limit
reached, REQUEUE=0, or past MAX_REQUEUES. The margin must hold the end of a step and one save: for
another, `sbatch --signal=B:USR1@600` or SBATCH_SIGNAL. Without SLURM, SIGTERM, SIGINT or SIGUSR1 saves
the same checkpoint and exits non-zero; the same command resumes.

Feature cache. With --feature_cache DIR (or the recipe's feature_cache), the clips not cached yet are
encoded first (python -m llava.train.cache_features, one process), then training reads them.

Learning curves. With --eval_milestones "ARGS" (the arguments of python -m llava.eval.curves), each word
milestone is evaluated in the background as soon as it is saved (OUTPUT_DIR/curves.log); once the
training has finished, this script evaluates what is left in the foreground and prints the table, so the
job ends with the whole curve. Its failure is the job's status.
USAGE
}

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    usage
    exit 0
fi

die() {
    echo "train_italian_video.sh: error: $*" >&2
    exit 2
}

# --- where to run from ---------------------------------------------------------------------------------
# Under sbatch this file is a copy in slurmd's spool folder, so its own folder means nothing there: the
# job's Command (the path sbatch was given) names the real one, and the submit folder is the fallback.
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUBMITTED_DIR=
if [[ -n "${SLURM_JOB_ID:-}" && ! -f "$SCRIPT_DIR/train_italian_video.sh" ]] && command -v scontrol >/dev/null 2>&1; then
    SUBMITTED_SCRIPT=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/.* Command=\([^ ]*\).*/\1/p') || true
    if [[ -n "${SUBMITTED_SCRIPT:-}" && -f "$SUBMITTED_SCRIPT" ]]; then
        SUBMITTED_DIR=$(cd "$(dirname "$SUBMITTED_SCRIPT")" && pwd)
    fi
fi
if [[ -n "${LLAVA_HOME:-}" ]]; then
    RUN_DIR=$LLAVA_HOME
elif [[ -f "$SCRIPT_DIR/train_italian_video.sh" ]]; then
    RUN_DIR=$SCRIPT_DIR
elif [[ -n "$SUBMITTED_DIR" && -f "$SUBMITTED_DIR/train_italian_video.sh" ]]; then
    RUN_DIR=$SUBMITTED_DIR
elif [[ -n "${SLURM_SUBMIT_DIR:-}" ]]; then
    RUN_DIR=$SLURM_SUBMIT_DIR
else
    RUN_DIR=$PWD
fi
cd "$RUN_DIR" || die "cannot enter $RUN_DIR"

# --- launching ---------------------------------------------------------------------------------------------
MODE=${MODE:-video}
RECIPE=${RECIPE:-recipes/italian_$MODE.yaml}
# A --config among the script's arguments is the run's recipe instead of RECIPE.
for arg in "$@"; do
    if [[ "$arg" == --config || "$arg" == --config=* ]]; then RECIPE=; break; fi
done
REQUEUE=${REQUEUE:-1}
MAX_REQUEUES=${MAX_REQUEUES:-10}
STOP_TIMEOUT=${STOP_TIMEOUT:-300}
LAUNCHER=${LAUNCHER:-auto}
TRAIN_MODULE=${TRAIN_MODULE:-llava.train.train}
PREFLIGHT=${PREFLIGHT:-1}

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=$PWD/.venv/bin/python
    elif command -v python >/dev/null 2>&1; then PYTHON=python
    else PYTHON=python3
    fi
fi

visible_gpus() {
    if [[ -n "${SLURM_GPUS_ON_NODE:-}" ]]; then
        echo "$SLURM_GPUS_ON_NODE"
    elif [[ -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
        if [[ -z "$CUDA_VISIBLE_DEVICES" || "$CUDA_VISIBLE_DEVICES" == -1* || "$CUDA_VISIBLE_DEVICES" == "NoDevFiles" ]]; then
            echo 0
        else
            local ids
            IFS=, read -r -a ids <<<"$CUDA_VISIBLE_DEVICES"
            echo "${#ids[@]}"
        fi
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
    else
        echo 0
    fi
}
NUM_GPUS=$(visible_gpus)
NUM_GPUS=${NUM_GPUS:-0}
DEFAULT_PROCS=$(( NUM_GPUS > 0 ? NUM_GPUS : 1 ))
GPUS_PER_NODE=${GPUS_PER_NODE:-${NPROC:-$DEFAULT_PROCS}}
NPROC=$GPUS_PER_NODE

if [[ "$LAUNCHER" == auto ]]; then
    if [[ -n "${SLURM_JOB_ID:-}" ]]; then LAUNCHER=slurm; else LAUNCHER=standalone; fi
fi

# --- checks of the launching variables; the training's preflight checks every setting -------------------
errors=()
# Variables that set training options before the recipe and the command line did: each one still set in
# the environment stops the script, naming the flag that replaces it ({} is the variable's value), rather
# than being silently ignored.
declare -A RETIRED=(
    [LM_PATH]="--model_name_or_path {}" [VISION_TOWER]="--vision_tower {}" [DATA_PATH]="--data_path {}"
    [VIDEO_DATA_PATH]="--data_path {}" [TEXT_DATA_PATH]="--data_path {}"
    [DATA_DIR]="--data_path {}/train_video.json --video_folder {}/videos" [VIDEO_FOLDER]="--video_folder {}"
    [IMAGE_FOLDER]="--image_folder {}" [OUTPUT_DIR]="--output_dir {}" [DS_CONFIG]="--deepspeed {}"
    [VERSION]="--version {}" [NUM_FRAMES]="--num_frames {}" [FAST_GRID]="--mm_fast_grid {}"
    [SLOW_GRID]="--mm_slow_grid {}" [MM_PACKER_NUM_HEADS]="--mm_packer_num_heads {}"
    [MM_VISION_SELECT_LAYER]="--mm_vision_select_layer {}" [MM_PROJECTOR_TYPE]="--mm_projector_type {}"
    [PROJECTOR_HIDDEN]="--mm_projector_hidden_size {}" [MM_RESAMPLER_TYPE]="--mm_resampler_type {}"
    [MM_TUNABLE_PARTS]="--mm_tunable_parts {}" [PRETRAIN_MM_MLP_ADAPTER]="--pretrain_mm_mlp_adapter {}"
    [NUM_EPOCHS]="--num_train_epochs {}" [MAX_STEPS]="--max_steps {}"
    [BATCH_SIZE]="--per_device_train_batch_size {}" [GRAD_ACCUM]="--gradient_accumulation_steps {}"
    [LEARNING_RATE]="--learning_rate {}" [MM_PROJECTOR_LR]="--mm_projector_lr {}" [WEIGHT_DECAY]="--weight_decay {}"
    [WARMUP_RATIO]="--warmup_ratio {}" [WARMUP_STEPS]="--warmup_steps {}" [LR_SCHEDULER]="--lr_scheduler_type {}"
    [MODEL_MAX_LENGTH]="--model_max_length {}" [MAX_SKIP_FRACTION]="--max_skip_fraction {}" [BF16]="--bf16 {}"
    [FP16]="--fp16 {}" [GRADIENT_CHECKPOINTING]="--activation_checkpointing {}" [LOGGING_STEPS]="--logging_steps {}"
    [SAVE_STRATEGY]="--save_strategy {}" [SAVE_STEPS]="--save_steps {}" [SAVE_TOTAL_LIMIT]="--save_total_limit {}"
    [SAVE_EVERY_MINUTES]="--save_every_minutes {}" [DATALOADER_NUM_WORKERS]="--dataloader_num_workers {}"
    [REPORT_TO]="--report_to {}" [SEED]="--seed {}" [EVAL_MILESTONES]="--eval_milestones {}"
    [FEATURE_CACHE]="--feature_cache {}"
)
# What a variable did depended on MODE: a text run read DATA_DIR's text file alone and ignored the visual
# modules' variables (a shell may still hold them from a video run), a video run ignored TEXT_DATA_PATH.
# The line names the flag for the run that read it, so that following it never adds a tower to a text run.
if [[ "$MODE" == text ]]; then
    RETIRED[DATA_DIR]="--data_path {}/train_text.json"
    for variable in VISION_TOWER VIDEO_FOLDER VIDEO_DATA_PATH NUM_FRAMES FAST_GRID SLOW_GRID MM_PACKER_NUM_HEADS \
        MM_VISION_SELECT_LAYER MM_PROJECTOR_TYPE PROJECTOR_HIDDEN MM_RESAMPLER_TYPE PRETRAIN_MM_MLP_ADAPTER; do
        RETIRED[$variable]+=" (for a video run)"
    done
else
    RETIRED[TEXT_DATA_PATH]+=" (for a text run, MODE=text)"
fi
for variable in $(printf '%s\n' "${!RETIRED[@]}" | sort); do
    if [[ -n "${!variable:-}" ]]; then
        value=${!variable}
        # as the flag takes it: a grid's sizes as separate values ("8x2x4" was allowed), anything else quoted
        if [[ "$variable" == *_GRID ]]; then value=${value//[x,]/ }; else printf -v value '%q' "$value"; fi
        # the value quoted in the replacement: bare, bash 5.2 reads a `&` in it as the matched `{}` and drops
        # the backslashes %q put in
        flags=${RETIRED[$variable]//\{\}/"$value"}
        errors+=("$variable is no longer read: pass $flags after the script's name instead (or set it in the recipe), and unset $variable")
    fi
done
is_int() { [[ "$1" =~ ^-?[0-9]+$ ]]; }
case "$MODE" in
    video | text) ;;
    *) errors+=("MODE must be 'video' (video+text training) or 'text' (text-only training on the captions), not '$MODE'") ;;
esac
[[ -z "$RECIPE" || -f "$RECIPE" ]] || errors+=("RECIPE: recipe file '$RECIPE' not found")
if ! is_int "$GPUS_PER_NODE" || (( GPUS_PER_NODE < 1 )); then
    errors+=("GPUS_PER_NODE/NPROC: '$GPUS_PER_NODE' is not a positive number of processes")
fi
case "$LAUNCHER" in
    slurm)
        [[ -n "${SLURM_JOB_ID:-}" ]] || errors+=("LAUNCHER=slurm outside a SLURM job (no SLURM_JOB_ID): use sbatch, or LAUNCHER=standalone")
        command -v srun >/dev/null 2>&1 || errors+=("LAUNCHER=slurm but srun is not on PATH")
        ;;
    standalone) ;;
    *) errors+=("LAUNCHER must be auto, slurm or standalone, not '$LAUNCHER'") ;;
esac
if [[ "$PYTHON" == */* ]]; then
    [[ -x "$PYTHON" ]] || errors+=("PYTHON: '$PYTHON' is not an executable")
else
    command -v "$PYTHON" >/dev/null 2>&1 || errors+=("PYTHON: '$PYTHON' not found on PATH")
fi
[[ "$PREFLIGHT" == 0 || "$PREFLIGHT" == 1 ]] || errors+=("PREFLIGHT must be 1 (check before launching) or 0, not '$PREFLIGHT'")
[[ "$REQUEUE" == 0 || "$REQUEUE" == 1 ]] || errors+=("REQUEUE must be 1 (a job told to stop requeues itself) or 0, not '$REQUEUE'")
is_int "$MAX_REQUEUES" && (( MAX_REQUEUES >= 0 )) || errors+=("MAX_REQUEUES: '$MAX_REQUEUES' is not a number of restarts (0 or more)")
is_int "$STOP_TIMEOUT" && (( STOP_TIMEOUT > 0 )) || errors+=("STOP_TIMEOUT: '$STOP_TIMEOUT' is not a positive number of seconds")
if (( ${#errors[@]} )); then
    for e in "${errors[@]}"; do echo "train_italian_video.sh: error: $e" >&2; done
    echo "train_italian_video.sh: nothing started (relative paths are taken from $RUN_DIR); see 'bash train_italian_video.sh --help'" >&2
    exit 2
fi

# --- the training command: the recipe, then the script's arguments ------------------------------------------
if [[ -n "$RECIPE" ]]; then ARGS=(--config "$RECIPE" "$@"); else ARGS=("$@"); fi
# What the launch itself needs of the settings: where the run writes (the stop record interrupted.json that
# the requeue decision reads is there), the feature cache to fill first, and what to evaluate after it.
VALUES=$("$PYTHON" -m llava.train.recipe output_dir feature_cache eval_milestones "${ARGS[@]}" && echo .) || exit $?
mapfile -t VALUES <<<"$VALUES"
OUTPUT_DIR=${VALUES[0]:-} FEATURE_CACHE=${VALUES[1]:-} EVAL_ARGS=${VALUES[2]:-}
[[ "${FEATURE_CACHE,,}" != none ]] || FEATURE_CACHE=  # --feature_cache none: the recipe's is removed
[[ "${EVAL_ARGS,,}" != none ]] || EVAL_ARGS=
[[ -n "$OUTPUT_DIR" ]] || die "no output folder: the recipe sets no output_dir and no --output_dir is given"

# CPU threads per training process: the job's (or machine's) cores shared among its processes.
if [[ -z "${OMP_NUM_THREADS:-}" ]]; then
    CPUS=${SLURM_CPUS_PER_TASK:-$(nproc 2>/dev/null || echo 1)}
    OMP_NUM_THREADS=$(( CPUS / GPUS_PER_NODE > 0 ? CPUS / GPUS_PER_NODE : 1 ))
fi
export OMP_NUM_THREADS
export PYTHONUNBUFFERED=1
# The training's own checks (the recipe and every flag, model folder, data files, folders, the output
# folder writable), in one process on
# this node, before any rank starts; its one line says what is wrong. Another TRAIN_MODULE has its own
# arguments: nothing to check it with.
PREFLIGHT_COMMAND=()
if [[ "$PREFLIGHT" == 1 && "$TRAIN_MODULE" == llava.train.train ]]; then
    PREFLIGHT_COMMAND=("$PYTHON" -m llava.train.preflight "${ARGS[@]}")
fi

if [[ "$LAUNCHER" == slurm ]]; then
    NNODES=${SLURM_NNODES:-${SLURM_JOB_NUM_NODES:-1}}
    FIRST_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1) || true
    [[ -n "$FIRST_NODE" ]] || die "cannot read the first node of SLURM_JOB_NODELIST='${SLURM_JOB_NODELIST:-}' (scontrol show hostnames)"
    # Nodes are reached at the address SLURM itself uses for them (NodeAddr), not at their names: a node's
    # name can resolve to a loopback address on that node (Debian's /etc/hosts maps it to 127.0.1.1) or to
    # another network. Space-separated name=address pairs; a node scontrol does not describe keeps its name.
    NODE_ADDRS=$(scontrol show node -o "$SLURM_JOB_NODELIST" 2>/dev/null \
        | sed -n 's/^NodeName=\([^ ]*\) .* NodeAddr=\([^ ]*\).*/\1=\2/p' | tr '\n' ' ') || true
    if [[ -z "${MASTER_ADDR:-}" ]]; then
        MASTER_ADDR=$FIRST_NODE
        for pair in $NODE_ADDRS; do if [[ "${pair%%=*}" == "$FIRST_NODE" ]]; then MASTER_ADDR=${pair#*=}; fi; done
    fi
    MASTER_PORT=${MASTER_PORT:-$(( 20000 + SLURM_JOB_ID % 20000 ))}
    export MASTER_ADDR MASTER_PORT
    export LLAVA_NODE_ADDRS=$NODE_ADDRS LLAVA_FIRST_NODE=$FIRST_NODE
    SRUN=(srun --nodes "$NNODES" --ntasks "$NNODES" --ntasks-per-node 1 --kill-on-bad-exit=1)
    [[ -n "${SLURM_CPUS_PER_TASK:-}" ]] && SRUN+=(--cpus-per-task "$SLURM_CPUS_PER_TASK")
    # Run on each node before its torchrun, which reads PET_<OPTION> for an option not on its command line:
    # --local_addr is the node's own NodeAddr (the rank-0 agent hands it to every worker as MASTER_ADDR;
    # torch would take the host name), and is_host marks the first node as the one that serves the
    # rendezvous store at MASTER_ADDR (torch would guess it by resolving the host name).
    # (One line, so that it reads as one argument in the job log.)
    ON_EACH_NODE='me=$SLURMD_NODENAME; addr=$me; is_host=false; '\
'for pair in $LLAVA_NODE_ADDRS; do if [[ "${pair%%=*}" == "$me" ]]; then addr=${pair#*=}; fi; done; '\
'if [[ "$me" == "$LLAVA_FIRST_NODE" ]]; then is_host=true; fi; '\
'echo "train_italian_video.sh: node $me: torchrun --local_addr $addr, rendezvous store here: $is_host" >&2; '\
'export PET_LOCAL_ADDR=$addr PET_RDZV_CONF=is_host=$is_host${PET_RDZV_CONF:+,$PET_RDZV_CONF}; exec "$@"'
    LAUNCH=(
        "${SRUN[@]}" bash -c "$ON_EACH_NODE" on-node "$PYTHON" -m llava.train.launch
        --nnodes "$NNODES" --nproc_per_node "$GPUS_PER_NODE"
        --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv_id "$SLURM_JOB_ID"
        -m "$TRAIN_MODULE"
    )
else
    NNODES=1
    LAUNCH=("$PYTHON" -m llava.train.launch --standalone --nnodes 1 --nproc_per_node "$NPROC" -m "$TRAIN_MODULE")
fi

# --- what will run (the preflight then prints the settings the recipe and the overrides make) -------------
{
    echo "=== train_italian_video.sh $(date '+%Y-%m-%d %H:%M:%S') on $(hostname) ==="
    printf '  %-22s %s\n' \
        RECIPE "${RECIPE:-(the --config given)}" \
        ARGUMENTS "$*" \
        RUN_DIR "$RUN_DIR" \
        OUTPUT_DIR "$OUTPUT_DIR" \
        LAUNCHER "$LAUNCHER${SLURM_JOB_ID:+ (job $SLURM_JOB_ID)}" \
        NODES "$NNODES" \
        GPUS_PER_NODE "$GPUS_PER_NODE (visible GPUs: $NUM_GPUS)" \
        OMP_NUM_THREADS "$OMP_NUM_THREADS" \
        PYTHON "$PYTHON"
    [[ -n "$FEATURE_CACHE" ]] && printf '  %-22s %s\n' FEATURE_CACHE "$FEATURE_CACHE"
    [[ -n "$EVAL_ARGS" ]] && printf '  %-22s %s\n' EVAL_MILESTONES "$EVAL_ARGS"
    if [[ "$LAUNCHER" == slurm ]]; then
        printf '  %-22s %s\n' RENDEZVOUS "$MASTER_ADDR:$MASTER_PORT"
        if [[ "$REQUEUE" == 1 ]]; then
            printf '  %-22s %s\n' REQUEUE "on a stop, at most $MAX_REQUEUES times (this start: restart ${SLURM_RESTART_COUNT:-0})"
        else
            printf '  %-22s %s\n' REQUEUE off
        fi
    fi
    echo "  command: ${LAUNCH[*]} ${ARGS[*]}"
}

# --- stopping and requeueing (see the top of this file) ---------------------------------------------------
# torchrun passes these signals on to its ranks and waits STOP_TIMEOUT seconds for them to save and exit.
# SIGUSR1 is not among its defaults: a SIGUSR1 (SLURM signals every process of a step) would kill it.
export PET_SIGNALS_TO_HANDLE=${PET_SIGNALS_TO_HANDLE:-SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1}
export PET_SHUTDOWN_TIMEOUT=$STOP_TIMEOUT
# Written by the training (rank 0) when it stops on a signal, after its checkpoint is complete.
INTERRUPTED=$OUTPUT_DIR/interrupted.json
rm -f "$INTERRUPTED"

STOP_REQUESTED=
CHILD=
CHILD_STOP_SIGNAL=
STOPPING="the training saves a checkpoint after its current step"  # what a stop does to the running step
request_stop() {  # trap: the batch shell was told to stop (SLURM's warning, or a signal to the whole job)
    [[ -n "$STOP_REQUESTED" ]] && return
    STOP_REQUESTED=$1
    if [[ "$LAUNCHER" == slurm ]]; then
        echo "train_italian_video.sh: SLURM asks this job to stop (SIG$1): $STOPPING" >&2
    else
        echo "train_italian_video.sh: told to stop (SIG$1): $STOPPING" >&2
    fi
    # srun passes SIGUSR1 on to every process of the step (a SIGTERM to srun would make it kill them)
    if [[ -n "$CHILD" ]]; then kill -s "${CHILD_STOP_SIGNAL:-$1}" "$CHILD" 2>/dev/null || true; fi
}
run_child() {  # run_child SIGNAL COMMAND...: COMMAND in the background, a stop passed on to it as SIGNAL (empty: as the signal that came); its status
    CHILD_STOP_SIGNAL=$1
    shift
    "$@" &
    CHILD=$!
    if [[ -n "$STOP_REQUESTED" ]]; then kill -s "${CHILD_STOP_SIGNAL:-$STOP_REQUESTED}" "$CHILD" 2>/dev/null || true; fi
    # `wait` returns early whenever a trapped signal arrives; bash keeps the child's status until asked
    while kill -0 "$CHILD" 2>/dev/null; do wait "$CHILD" || true; done
    local status=0
    wait "$CHILD" || status=$?
    CHILD=
    return "$status"
}
with_interrupt() {  # with_interrupt COMMAND...: COMMAND as if in the foreground: bash makes a background command ignore SIGINT
    trap - INT
    exec "$@"
}
evaluate_and_exit() {  # after a finished training: the evaluation of what is left, in the foreground (see "Learning curves")
    local status=0 rerun="$PYTHON -m llava.eval.curves $OUTPUT_DIR $EVAL_ARGS"
    if [[ -n "$STOP_REQUESTED" ]]; then
        echo "train_italian_video.sh: the training finished; not evaluating after a stop (SIG$STOP_REQUESTED); to evaluate what is missing: $rerun" >&2
        exit 75
    fi
    echo "=== evaluating the word milestones and the final model: $rerun ==="
    STOPPING="the evaluation ends; the rows it wrote are kept"
    run_child TERM with_interrupt "$PYTHON" -m llava.train.milestone_eval "$OUTPUT_DIR" "$EVAL_ARGS" || status=$?
    if [[ -n "$STOP_REQUESTED" ]]; then
        echo "train_italian_video.sh: the training finished; its evaluation stopped (SIG$STOP_REQUESTED); to evaluate what is missing: $rerun" >&2
    elif (( status != 0 )); then
        echo "train_italian_video.sh: the training finished (the final model is in $OUTPUT_DIR); its evaluation failed (status $status)" >&2
    fi
    exit "$status"
}
requeue_or_exit() {  # requeue_or_exit STATUS WHY: the job was told to stop and did not finish
    local status=$1 why=$2 restarts=${SLURM_RESTART_COUNT:-0} state
    (( status != 0 )) || status=75  # stopped before training started: still not finished
    echo "train_italian_video.sh: $why" >&2
    if [[ "$REQUEUE" != 1 ]]; then
        echo "train_italian_video.sh: not requeueing: REQUEUE=$REQUEUE; submit the same job again to resume" >&2
        exit "$status"
    fi
    if (( restarts >= MAX_REQUEUES )); then
        echo "train_italian_video.sh: not requeueing: MAX_REQUEUES=$MAX_REQUEUES reached (this was restart $restarts); submit the same job again to resume" >&2
        exit "$status"
    fi
    # A job SLURM is ending itself (cancelled, at its time limit, preempted) is no longer RUNNING: requeueing
    # it would undo a plain scancel. SLURM requeues by itself a job it preempts to requeue.
    state=$(squeue -h -j "$SLURM_JOB_ID" -o %T 2>/dev/null) || true
    if [[ "$state" != RUNNING ]]; then
        echo "train_italian_video.sh: not requeueing: SLURM is ending this job itself (state ${state:-unknown})" >&2
        exit "$status"
    fi
    if ! scontrol requeue "$SLURM_JOB_ID"; then
        echo "train_italian_video.sh: scontrol requeue $SLURM_JOB_ID failed; submit the same job again to resume" >&2
        exit "$status"
    fi
    echo "train_italian_video.sh: requeued job $SLURM_JOB_ID (restart $(( restarts + 1 )) of at most $MAX_REQUEUES): it resumes from the newest complete checkpoint in $OUTPUT_DIR" >&2
    exit 0
}

if [[ "$LAUNCHER" != slurm ]]; then
    if (( ${#PREFLIGHT_COMMAND[@]} )); then
        "${PREFLIGHT_COMMAND[@]}" || exit $?
    fi
    mkdir -p "$OUTPUT_DIR"
    if [[ -n "$FEATURE_CACHE" ]]; then
        # The training flags as they are: the caching step takes the data and tower ones and computes only
        # the clips not cached yet (a no-op on a resumed run).
        echo "=== caching tower features in $FEATURE_CACHE ==="
        "$PYTHON" -m llava.train.cache_features "${ARGS[@]}"
    fi
    [[ -n "$EVAL_ARGS" ]] || exec "${LAUNCH[@]}" "${ARGS[@]}"
    # The script stays, to evaluate once the training has finished. SIGTERM or SIGUSR1 sent to it is passed
    # on to torchrun; Ctrl-C reaches every process of the terminal's group by itself, torchrun included.
    trap 'request_stop TERM' TERM
    trap 'request_stop USR1' USR1
    trap 'STOP_REQUESTED=${STOP_REQUESTED:-INT}' INT
    status=0
    run_child "" with_interrupt "${LAUNCH[@]}" "${ARGS[@]}" || status=$?
    (( status != 0 )) || evaluate_and_exit
    exit "$status"
fi

# Under SLURM the shell stays, to requeue the job; SLURM's warning (--signal=B:USR1@...) comes to it.
trap 'request_stop USR1' USR1
trap 'request_stop TERM' TERM
status=0
if (( ${#PREFLIGHT_COMMAND[@]} )); then
    run_child TERM "${PREFLIGHT_COMMAND[@]}" || status=$?
    if [[ -n "$STOP_REQUESTED" ]]; then requeue_or_exit "$status" "stopped while checking, before training"; fi
    (( status == 0 )) || exit "$status"
fi
mkdir -p "$OUTPUT_DIR"
if [[ -n "$FEATURE_CACHE" ]]; then
    echo "=== caching tower features in $FEATURE_CACHE ==="
    # stopped, it ends at once: the clips it cached stay cached, the next start computes the rest
    run_child TERM "$PYTHON" -m llava.train.cache_features "${ARGS[@]}" || status=$?
    if [[ -n "$STOP_REQUESTED" ]]; then requeue_or_exit "$status" "stopped while caching features, before training"; fi
    (( status == 0 )) || exit "$status"
fi
if [[ -n "$STOP_REQUESTED" ]]; then requeue_or_exit 0 "stopped before training started"; fi
run_child USR1 "${LAUNCH[@]}" "${ARGS[@]}" || status=$?
if (( status == 0 )); then
    [[ -n "$EVAL_ARGS" ]] || exit 0
    evaluate_and_exit
fi
if [[ -f "$INTERRUPTED" ]]; then
    requeue_or_exit "$status" "the training stopped on a signal: $(cat "$INTERRUPTED")"
elif [[ -n "$STOP_REQUESTED" ]]; then
    # e.g. the signal came while the ranks were starting, before they could catch it: nothing was
    # trained since the newest complete checkpoint, which the next start resumes from
    requeue_or_exit "$status" "the training ended on SIG$STOP_REQUESTED without a checkpoint of its own"
fi
exit "$status"

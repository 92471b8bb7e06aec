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
# TokenPacker and an MLP projector (MODE=video), or the language model alone on the captions (MODE=text).
#
#   mkdir -p logs && sbatch train_italian_video.sh              # SLURM, the #SBATCH lines above
#   sbatch --nodes=4 train_italian_video.sh                      # several nodes: srun + torchrun (c10d)
#   MODE=text sbatch train_italian_video.sh                      # text-only training on the captions
#   NPROC=2 bash train_italian_video.sh --max_steps 10           # no SLURM: torchrun --standalone
#
# Every path and hyperparameter below is an environment variable; arguments after the script name go to
# llava.train.train unchanged (and win over the script's own, being later on the command line). Relative
# paths are taken from the folder of this script (under sbatch too; LLAVA_HOME overrides it).
# The logs/ folder of the --output line must exist before sbatch (SLURM opens it before the job runs).
# Started again with the same settings, a run resumes from the newest complete checkpoint in OUTPUT_DIR.
# Before anything starts, the script checks its own variables (one line each), then runs the training's
# preflight once (`python -m llava.train.preflight` with the training's arguments: the model folder,
# every data file and sample, the folders, OUTPUT_DIR writable); a problem ends the job at once with
# that one line and its status (2: a variable or flag, 1: a path or a data file).
#
# Stopping and requeueing. SLURM sends the batch shell SIGUSR1 300 s before the time limit (the --signal
# line above); the shell passes it on through srun to torchrun and every rank, on every node. The ranks
# finish their current optimizer step, save one complete checkpoint (model, optimizer, scheduler, RNG,
# data position, words seen), print where, and stop; the job then requeues itself (scontrol requeue,
# same job id, SLURM_RESTART_COUNT counts the restarts) and resumes from that checkpoint when it starts
# again. A preemption notice, `scancel --signal=USR1 JOBID` (or --signal=TERM), does the same. Not
# requeued: a run that finished, one that failed for another reason, one SLURM itself is ending (plain
# scancel, the time limit reached), and any past MAX_REQUEUES restarts or with REQUEUE=0.
# The margin must hold the end of a step and one checkpoint save (a few GB on a shared file system):
# after the time limit SLURM allows only KillWait (30 s by default) between SIGTERM and SIGKILL, and it
# may send the warning up to 30 s early. For another margin: `sbatch --signal=B:USR1@600 ...`, or
# SBATCH_SIGNAL=B:USR1@600 in the environment of sbatch.
# Without SLURM, SIGTERM, SIGINT (Ctrl-C) or SIGUSR1 to the script (it becomes torchrun) saves the same
# checkpoint and exits non-zero; the same command resumes.
#
# Environment (defaults in brackets):
#   MODE                    video | text                                        [video]
#   LM_PATH                 language model folder (config.json + tokenizer)     [./models/bambi-gpt2-italian]
#   VISION_TOWER            tower folder or hub id (video mode only)            [facebook/dinov2-large]
#   DATA_DIR                where the prepared WebVid-Italian data lives         [./data/webvid_italian]
#   VIDEO_DATA_PATH         LLaVA JSON of video+caption samples                 [$DATA_DIR/train_video.json]
#   TEXT_DATA_PATH          LLaVA JSON of text-only caption samples             [$DATA_DIR/train_text.json]
#   DATA_PATH               the data file actually used (several: comma-joined, [by MODE: one of the two above]
#                           /dir/{a,b}.json, or a LLaVA-NeXT YAML mixture)
#   VIDEO_FOLDER            clips, paths in the JSON are relative to it         [$DATA_DIR/videos]
#   IMAGE_FOLDER            images, for data files that hold image samples      [unset]
#   FEATURE_CACHE           folder of cached tower features (video mode): the   [unset: no cache]
#                           clips not cached yet are encoded first (one process),
#                           then every epoch reads them instead of decoding clips
#                           and running the frozen tower
#   OUTPUT_DIR              checkpoints and the final model                     [./checkpoints/llava-bambi-gpt2-italian-$MODE]
#   DS_CONFIG               DeepSpeed config, or `none` to train without it     [scripts/zero2.json]
#   VERSION                 prompt template (plain for GPT-2)                   [plain]
#   NUM_FRAMES              frames sampled per clip                             [8]
#   FAST_GRID / SLOW_GRID   packer output grids, frames rows columns            ["8 2 4" (64 tokens) / "2 4 4" (32)]
#   MM_PACKER_NUM_HEADS     attention heads of each packer track                [8]
#   MM_VISION_SELECT_LAYER  tower layer whose patch tokens are used             [-2]
#   MM_PROJECTOR_TYPE       projector                                           [mlp2x_gelu]
#   PROJECTOR_HIDDEN        projector hidden width (1024 -> 2560 -> 768)        [2560]
#   MM_RESAMPLER_TYPE       resampler                                           [fast_slow_token_packer]
#   MM_TUNABLE_PARTS        parts that train (video mode)                       [mm_vision_resampler,mm_mlp_adapter,mm_language_model]
#   PRETRAIN_MM_MLP_ADAPTER mm_projector.bin of an adapter-only run             [unset]
#   NUM_EPOCHS              epochs                                              [80]
#   MAX_STEPS               stop after this many optimizer steps (-1: epochs)   [-1]
#   BATCH_SIZE              per-device batch size                               [8]
#   GRAD_ACCUM              gradient accumulation steps                         [1]
#   LEARNING_RATE           learning rate (language model)                      [5e-5]
#   MM_PROJECTOR_LR         learning rate of projector, packer, embeddings      [2e-4]
#   WEIGHT_DECAY / WARMUP_RATIO / LR_SCHEDULER                                  [0.0 / 0.03 / cosine]
#   WARMUP_STEPS            warmup steps, overrides WARMUP_RATIO                [unset]
#   MODEL_MAX_LENGTH        longest sequence, visual + text tokens              [1024]
#   MAX_SKIP_FRACTION       abort when more of the clips than this are unreadable [0.05]
#   BF16 / FP16             mixed precision; auto: bf16 on GPUs that have it,   [auto / auto]
#                           fp16 on older GPUs (V100), none on the CPU
#   GRADIENT_CHECKPOINTING  true | false                                        [false]
#   LOGGING_STEPS / SAVE_STRATEGY / SAVE_STEPS / SAVE_TOTAL_LIMIT               [10 / steps / 1000 / 3]
#   SAVE_EVERY_MINUTES      besides SAVE_STEPS, a checkpoint whenever this many [30]
#                           minutes have passed since the last (0: SAVE_STEPS only)
#   REQUEUE                 1: a SLURM job told to stop requeues itself; 0: no  [1]
#   MAX_REQUEUES            restarts (SLURM_RESTART_COUNT) after which it no    [10]
#                           longer requeues itself
#   STOP_TIMEOUT            seconds torchrun gives its ranks, once signalled,   [300]
#                           to finish the step, save and exit before it kills them
#   SBATCH_SIGNAL           read by sbatch itself: the warning before the time  [B:USR1@300, the #SBATCH line]
#                           limit
#   DATALOADER_NUM_WORKERS  data loading processes per rank                     [4]
#   REPORT_TO / SEED                                                            [none / 42]
#   GPUS_PER_NODE (= NPROC) training processes per node                         [visible GPUs, or 1 without GPUs]
#   MASTER_ADDR / MASTER_PORT  rendezvous under SLURM (an address of the first  [first node's NodeAddr /
#                           node, which hosts the store)                         20000 + job id % 20000]
#   LAUNCHER                auto | slurm | standalone                           [auto: slurm inside a SLURM job]
#   PYTHON                  interpreter                                         [.venv/bin/python if present, else python]
#   TRAIN_MODULE            module torchrun starts                              [llava.train.train]
#   PREFLIGHT               1: check the model, data and folders before         [1]
#                           launching (llava.train.train only); 0: skip
#   LLAVA_HOME              folder to run from                                  [this script's folder / SLURM_SUBMIT_DIR]

set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '/^# Trains LLaVA/,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
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

# --- settings --------------------------------------------------------------------------------------------
MODE=${MODE:-video}
LM_PATH=${LM_PATH:-./models/bambi-gpt2-italian}
VISION_TOWER=${VISION_TOWER:-facebook/dinov2-large}
DATA_DIR=${DATA_DIR:-./data/webvid_italian}
VIDEO_DATA_PATH=${VIDEO_DATA_PATH:-$DATA_DIR/train_video.json}
TEXT_DATA_PATH=${TEXT_DATA_PATH:-$DATA_DIR/train_text.json}
VIDEO_FOLDER=${VIDEO_FOLDER:-$DATA_DIR/videos}
IMAGE_FOLDER=${IMAGE_FOLDER:-}
FEATURE_CACHE=${FEATURE_CACHE:-}
DS_CONFIG=${DS_CONFIG:-scripts/zero2.json}
VERSION=${VERSION:-plain}

NUM_FRAMES=${NUM_FRAMES:-8}
FAST_GRID=${FAST_GRID:-8 2 4}
SLOW_GRID=${SLOW_GRID:-2 4 4}
MM_PACKER_NUM_HEADS=${MM_PACKER_NUM_HEADS:-8}
MM_VISION_SELECT_LAYER=${MM_VISION_SELECT_LAYER:--2}
MM_PROJECTOR_TYPE=${MM_PROJECTOR_TYPE:-mlp2x_gelu}
PROJECTOR_HIDDEN=${PROJECTOR_HIDDEN:-2560}
MM_RESAMPLER_TYPE=${MM_RESAMPLER_TYPE:-fast_slow_token_packer}
PRETRAIN_MM_MLP_ADAPTER=${PRETRAIN_MM_MLP_ADAPTER:-}

NUM_EPOCHS=${NUM_EPOCHS:-80}
MAX_STEPS=${MAX_STEPS:--1}
BATCH_SIZE=${BATCH_SIZE:-8}
GRAD_ACCUM=${GRAD_ACCUM:-1}
LEARNING_RATE=${LEARNING_RATE:-5e-5}
MM_PROJECTOR_LR=${MM_PROJECTOR_LR:-2e-4}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.0}
WARMUP_RATIO=${WARMUP_RATIO:-0.03}
WARMUP_STEPS=${WARMUP_STEPS:-$WARMUP_RATIO}  # transformers 5: a float below 1 is a ratio of the steps
LR_SCHEDULER=${LR_SCHEDULER:-cosine}
MODEL_MAX_LENGTH=${MODEL_MAX_LENGTH:-1024}
MAX_SKIP_FRACTION=${MAX_SKIP_FRACTION:-0.05}
BF16=${BF16:-auto}
FP16=${FP16:-auto}
GRADIENT_CHECKPOINTING=${GRADIENT_CHECKPOINTING:-false}
LOGGING_STEPS=${LOGGING_STEPS:-10}
SAVE_STRATEGY=${SAVE_STRATEGY:-steps}
SAVE_STEPS=${SAVE_STEPS:-1000}
SAVE_TOTAL_LIMIT=${SAVE_TOTAL_LIMIT:-3}
SAVE_EVERY_MINUTES=${SAVE_EVERY_MINUTES:-30}
REQUEUE=${REQUEUE:-1}
MAX_REQUEUES=${MAX_REQUEUES:-10}
STOP_TIMEOUT=${STOP_TIMEOUT:-300}
DATALOADER_NUM_WORKERS=${DATALOADER_NUM_WORKERS:-4}
REPORT_TO=${REPORT_TO:-none}
SEED=${SEED:-42}
LAUNCHER=${LAUNCHER:-auto}
TRAIN_MODULE=${TRAIN_MODULE:-llava.train.train}
PREFLIGHT=${PREFLIGHT:-1}

case "$MODE" in
    video)
        DATA_PATH=${DATA_PATH:-$VIDEO_DATA_PATH}
        MM_TUNABLE_PARTS=${MM_TUNABLE_PARTS:-mm_vision_resampler,mm_mlp_adapter,mm_language_model}
        ;;
    text)
        DATA_PATH=${DATA_PATH:-$TEXT_DATA_PATH}
        MM_TUNABLE_PARTS=${MM_TUNABLE_PARTS:-mm_language_model}
        ;;
    *) die "MODE must be 'video' (video+text training) or 'text' (text-only training on the captions), not '$MODE'" ;;
esac
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-bambi-gpt2-italian-$MODE}

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=$PWD/.venv/bin/python
    elif command -v python >/dev/null 2>&1; then PYTHON=python
    else PYTHON=python3
    fi
fi

# --- processes per node ------------------------------------------------------------------------------------
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
gpu_has_bf16() {
    "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else 1)' 2>/dev/null
}
if [[ "$BF16" == auto || "$FP16" == auto ]]; then
    HAS_BF16=false
    if (( NUM_GPUS > 0 )) && gpu_has_bf16; then HAS_BF16=true; fi
    if [[ "$BF16" == auto ]]; then BF16=$HAS_BF16; fi
    if [[ "$FP16" == auto ]]; then
        # fp16 only where there are GPUs, bf16 is off, and the GPUs lack it (an explicit BF16=false stays fp32)
        if (( NUM_GPUS > 0 )) && [[ "$BF16" == false && "$HAS_BF16" == false ]]; then FP16=true; else FP16=false; fi
    fi
fi

if [[ "$LAUNCHER" == auto ]]; then
    if [[ -n "${SLURM_JOB_ID:-}" ]]; then LAUNCHER=slurm; else LAUNCHER=standalone; fi
fi

# --- checks: fail here, in a second, rather than minutes into a job --------------------------------------
errors=()
is_int() { [[ "$1" =~ ^-?[0-9]+$ ]]; }
is_number() { [[ "$1" =~ ^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]]; }
# check_count NAME MIN: the variable NAME holds a whole number of at least MIN
check_count() {
    local value=${!1}
    if ! is_int "$value" || (( value < $2 )); then
        errors+=("$1: '$value' is not a whole number of at least $2")
    fi
}
check_number() {
    is_number "${!1}" || errors+=("$1: '${!1}' is not a number")
}
check_choice() {  # check_choice NAME CHOICE...
    local name=$1 value=${!1} choice
    shift
    for choice in "$@"; do [[ "$value" == "$choice" ]] && return; done
    local IFS=/
    errors+=("$name must be $*, not '$value'")
}
looks_like_hub_id() {  # owner/name, not a path that happens to be missing
    [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$ ]] && [[ "$1" != .* ]]
}

if [[ ! -d "$LM_PATH" ]]; then
    errors+=("LM_PATH: language model folder '$LM_PATH' not found (from $RUN_DIR); point LM_PATH at the BAMBI GPT-2 folder")
elif [[ ! -f "$LM_PATH/config.json" ]]; then
    errors+=("LM_PATH: '$LM_PATH' has no config.json; it is not a model folder written by save_pretrained")
fi
if [[ "$DATA_PATH" == *[,{]* ]]; then
    :  # several files: the preflight checks each of them
elif [[ ! -f "$DATA_PATH" ]]; then
    errors+=("DATA_PATH: data file '$DATA_PATH' not found (MODE=$MODE; set DATA_PATH, or $( [[ $MODE == video ]] && echo VIDEO_DATA_PATH || echo TEXT_DATA_PATH ) or DATA_DIR)")
fi
if [[ "$MODE" == video ]]; then
    if [[ ! -d "$VIDEO_FOLDER" ]]; then
        errors+=("VIDEO_FOLDER: video folder '$VIDEO_FOLDER' not found")
    fi
    if [[ -d "$VISION_TOWER" ]]; then
        :
    elif looks_like_hub_id "$VISION_TOWER"; then
        if [[ "${HF_HUB_OFFLINE:-0}" =~ ^(1|true|TRUE|yes|YES|on|ON)$ ]]; then
            hub_cache=${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}
            if [[ ! -d "$hub_cache/models--${VISION_TOWER//\//--}" ]]; then
                errors+=("VISION_TOWER: '$VISION_TOWER' is not a local folder, HF_HUB_OFFLINE is set and it is not in the hub cache $hub_cache; download it ahead or point VISION_TOWER at its folder")
            fi
        fi
    else
        errors+=("VISION_TOWER: '$VISION_TOWER' is neither a folder nor a hub id (owner/name)")
    fi
    if [[ -n "$PRETRAIN_MM_MLP_ADAPTER" && ! -f "$PRETRAIN_MM_MLP_ADAPTER" ]]; then
        errors+=("PRETRAIN_MM_MLP_ADAPTER: '$PRETRAIN_MM_MLP_ADAPTER' not found")
    fi
    read -r -a FAST_GRID_ARGS <<<"${FAST_GRID//[x,]/ }"
    read -r -a SLOW_GRID_ARGS <<<"${SLOW_GRID//[x,]/ }"
    for grid_name in FAST_GRID SLOW_GRID; do
        declare -n grid_ref="${grid_name}_ARGS"
        if (( ${#grid_ref[@]} != 3 )) || ! is_int "${grid_ref[0]}" || ! is_int "${grid_ref[1]}" || ! is_int "${grid_ref[2]}"; then
            errors+=("$grid_name: '${!grid_name}' is not three integers (frames rows columns), e.g. '8 2 4'")
        fi
        unset -n grid_ref
    done
fi
if [[ -n "$IMAGE_FOLDER" && ! -d "$IMAGE_FOLDER" ]]; then
    errors+=("IMAGE_FOLDER: image folder '$IMAGE_FOLDER' not found")
fi
if [[ "$DS_CONFIG" != none && ! -f "$DS_CONFIG" ]]; then
    errors+=("DS_CONFIG: DeepSpeed config '$DS_CONFIG' not found (DS_CONFIG=none trains without DeepSpeed)")
fi
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
if [[ "$MODE" == video ]]; then
    check_count NUM_FRAMES 1
    check_count MM_PACKER_NUM_HEADS 1
    check_count PROJECTOR_HIDDEN 1
    is_int "$MM_VISION_SELECT_LAYER" || errors+=("MM_VISION_SELECT_LAYER: '$MM_VISION_SELECT_LAYER' is not a layer index (a whole number, e.g. -2)")
    check_number MM_PROJECTOR_LR
    check_number MAX_SKIP_FRACTION
fi
check_count MAX_STEPS -1
check_count BATCH_SIZE 1
check_count GRAD_ACCUM 1
check_count MODEL_MAX_LENGTH 1
check_count LOGGING_STEPS 1
check_count SAVE_STEPS 1
check_count SAVE_TOTAL_LIMIT 0
check_count DATALOADER_NUM_WORKERS 0
check_count SEED 0
for number_name in NUM_EPOCHS LEARNING_RATE WEIGHT_DECAY WARMUP_RATIO SAVE_EVERY_MINUTES; do
    check_number "$number_name"
done
[[ "$WARMUP_STEPS" == "$WARMUP_RATIO" ]] || check_number WARMUP_STEPS
check_choice BF16 auto true false
check_choice FP16 auto true false
check_choice GRADIENT_CHECKPOINTING true false 1 0 yes no True False
check_choice SAVE_STRATEGY steps epoch no
check_choice PREFLIGHT 1 0
[[ "$REQUEUE" == 0 || "$REQUEUE" == 1 ]] || errors+=("REQUEUE must be 1 (a job told to stop requeues itself) or 0, not '$REQUEUE'")
is_int "$MAX_REQUEUES" && (( MAX_REQUEUES >= 0 )) || errors+=("MAX_REQUEUES: '$MAX_REQUEUES' is not a number of restarts (0 or more)")
is_int "$STOP_TIMEOUT" && (( STOP_TIMEOUT > 0 )) || errors+=("STOP_TIMEOUT: '$STOP_TIMEOUT' is not a positive number of seconds")
if (( ${#errors[@]} )); then
    for e in "${errors[@]}"; do echo "train_italian_video.sh: error: $e" >&2; done
    echo "train_italian_video.sh: nothing started (relative paths are taken from $RUN_DIR); see 'bash train_italian_video.sh --help'" >&2
    exit 2
fi

# --- the training command ------------------------------------------------------------------------------------
ARGS=(
    --model_name_or_path "$LM_PATH"
    --version "$VERSION"
    --data_path "$DATA_PATH"
    --output_dir "$OUTPUT_DIR"
    --model_max_length "$MODEL_MAX_LENGTH"
    --mm_tunable_parts "$MM_TUNABLE_PARTS"
    --num_train_epochs "$NUM_EPOCHS"
    --max_steps "$MAX_STEPS"
    --per_device_train_batch_size "$BATCH_SIZE"
    --gradient_accumulation_steps "$GRAD_ACCUM"
    --learning_rate "$LEARNING_RATE"
    --weight_decay "$WEIGHT_DECAY"
    --warmup_steps "$WARMUP_STEPS"
    --lr_scheduler_type "$LR_SCHEDULER"
    --logging_steps "$LOGGING_STEPS"
    --save_strategy "$SAVE_STRATEGY"
    --save_steps "$SAVE_STEPS"
    --save_total_limit "$SAVE_TOTAL_LIMIT"
    --save_every_minutes "$SAVE_EVERY_MINUTES"
    --bf16 "$BF16"
    --fp16 "$FP16"
    --dataloader_num_workers "$DATALOADER_NUM_WORKERS"
    --report_to "$REPORT_TO"
    --seed "$SEED"
)
if [[ "$MODE" == video ]]; then
    ARGS+=(
        --video_folder "$VIDEO_FOLDER"
        --vision_tower "$VISION_TOWER"
        --mm_vision_select_layer "$MM_VISION_SELECT_LAYER"
        --num_frames "$NUM_FRAMES"
        --mm_resampler_type "$MM_RESAMPLER_TYPE"
        --mm_fast_grid "${FAST_GRID_ARGS[@]}"
        --mm_slow_grid "${SLOW_GRID_ARGS[@]}"
        --mm_packer_num_heads "$MM_PACKER_NUM_HEADS"
        --mm_projector_type "$MM_PROJECTOR_TYPE"
        --mm_projector_hidden_size "$PROJECTOR_HIDDEN"
        --mm_projector_lr "$MM_PROJECTOR_LR"
        --max_skip_fraction "$MAX_SKIP_FRACTION"
    )
    [[ -n "$PRETRAIN_MM_MLP_ADAPTER" ]] && ARGS+=(--pretrain_mm_mlp_adapter "$PRETRAIN_MM_MLP_ADAPTER")
    [[ -n "$FEATURE_CACHE" ]] && ARGS+=(--feature_cache "$FEATURE_CACHE")
fi
[[ -n "$IMAGE_FOLDER" ]] && ARGS+=(--image_folder "$IMAGE_FOLDER")
# only when on: transformers 5 calls the flag a deprecated alias of --activation_checkpointing
case "${GRADIENT_CHECKPOINTING,,}" in true | 1 | yes) ARGS+=(--gradient_checkpointing True) ;; esac
[[ "$DS_CONFIG" != none ]] && ARGS+=(--deepspeed "$DS_CONFIG")
ARGS+=("$@")

# CPU threads per training process: the job's (or machine's) cores shared among its processes.
if [[ -z "${OMP_NUM_THREADS:-}" ]]; then
    CPUS=${SLURM_CPUS_PER_TASK:-$(nproc 2>/dev/null || echo 1)}
    OMP_NUM_THREADS=$(( CPUS / GPUS_PER_NODE > 0 ? CPUS / GPUS_PER_NODE : 1 ))
fi
export OMP_NUM_THREADS
export PYTHONUNBUFFERED=1
# The training's own checks (model folder, data files, folders, OUTPUT_DIR writable), in one process on
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

# --- what will run ----------------------------------------------------------------------------------------------
{
    echo "=== train_italian_video.sh $(date '+%Y-%m-%d %H:%M:%S') on $(hostname) ==="
    printf '  %-22s %s\n' \
        MODE "$MODE" \
        RUN_DIR "$RUN_DIR" \
        LM_PATH "$LM_PATH" \
        DATA_PATH "$DATA_PATH" \
        OUTPUT_DIR "$OUTPUT_DIR" \
        DS_CONFIG "$DS_CONFIG" \
        LAUNCHER "$LAUNCHER${SLURM_JOB_ID:+ (job $SLURM_JOB_ID)}" \
        NODES "$NNODES" \
        GPUS_PER_NODE "$GPUS_PER_NODE (visible GPUs: $NUM_GPUS)" \
        OMP_NUM_THREADS "$OMP_NUM_THREADS" \
        PYTHON "$PYTHON"
    if [[ "$LAUNCHER" == slurm ]]; then
        printf '  %-22s %s\n' RENDEZVOUS "$MASTER_ADDR:$MASTER_PORT"
        if [[ "$REQUEUE" == 1 ]]; then
            printf '  %-22s %s\n' REQUEUE "on a stop, at most $MAX_REQUEUES times (this start: restart ${SLURM_RESTART_COUNT:-0})"
        else
            printf '  %-22s %s\n' REQUEUE off
        fi
    fi
    if [[ "$MODE" == video ]]; then
        printf '  %-22s %s\n' \
            VISION_TOWER "$VISION_TOWER" \
            VIDEO_FOLDER "$VIDEO_FOLDER" \
            FEATURE_CACHE "${FEATURE_CACHE:-none}" \
            NUM_FRAMES "$NUM_FRAMES" \
            FAST_GRID "${FAST_GRID_ARGS[*]} ($(( FAST_GRID_ARGS[0] * FAST_GRID_ARGS[1] * FAST_GRID_ARGS[2] )) tokens)" \
            SLOW_GRID "${SLOW_GRID_ARGS[*]} ($(( SLOW_GRID_ARGS[0] * SLOW_GRID_ARGS[1] * SLOW_GRID_ARGS[2] )) tokens)" \
            PROJECTOR "$MM_PROJECTOR_TYPE, hidden $PROJECTOR_HIDDEN" \
            MM_PROJECTOR_LR "$MM_PROJECTOR_LR"
    fi
    printf '  %-22s %s\n' \
        MM_TUNABLE_PARTS "$MM_TUNABLE_PARTS" \
        EPOCHS "$NUM_EPOCHS (max steps $MAX_STEPS)" \
        BATCH "$BATCH_SIZE per device x $GRAD_ACCUM accumulation x $(( NNODES * GPUS_PER_NODE )) processes" \
        LEARNING_RATE "$LEARNING_RATE ($LR_SCHEDULER, warmup $WARMUP_STEPS, weight decay $WEIGHT_DECAY)" \
        PRECISION "bf16=$BF16 fp16=$FP16" \
        CHECKPOINTS "every $SAVE_STEPS steps and every $SAVE_EVERY_MINUTES minutes, and on a stop signal" \
        EXTRA_ARGS "${*:-none}"
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
request_stop() {  # trap: the batch shell was told to stop (SLURM's warning, or a signal to the whole job)
    [[ -n "$STOP_REQUESTED" ]] && return
    STOP_REQUESTED=$1
    echo "train_italian_video.sh: SLURM asks this job to stop (SIG$1): the training saves a checkpoint after its current step" >&2
    # srun passes SIGUSR1 on to every process of the step (a SIGTERM to srun would make it kill them)
    if [[ -n "$CHILD" ]]; then kill -s "$CHILD_STOP_SIGNAL" "$CHILD" 2>/dev/null || true; fi
}
run_child() {  # run_child SIGNAL COMMAND...: COMMAND in the background, a stop passed on to it as SIGNAL; its status
    CHILD_STOP_SIGNAL=$1
    shift
    "$@" &
    CHILD=$!
    if [[ -n "$STOP_REQUESTED" ]]; then kill -s "$CHILD_STOP_SIGNAL" "$CHILD" 2>/dev/null || true; fi
    # `wait` returns early whenever a trapped signal arrives; bash keeps the child's status until asked
    while kill -0 "$CHILD" 2>/dev/null; do wait "$CHILD" || true; done
    local status=0
    wait "$CHILD" || status=$?
    CHILD=
    return "$status"
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
    if [[ "$MODE" == video && -n "$FEATURE_CACHE" ]]; then
        # The training flags as they are: the caching step takes the data and tower ones and computes only
        # the clips not cached yet (a no-op on a resumed run).
        echo "=== caching tower features in $FEATURE_CACHE ==="
        "$PYTHON" -m llava.train.cache_features "${ARGS[@]}"
    fi
    exec "${LAUNCH[@]}" "${ARGS[@]}"
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
if [[ "$MODE" == video && -n "$FEATURE_CACHE" ]]; then
    echo "=== caching tower features in $FEATURE_CACHE ==="
    # stopped, it ends at once: the clips it cached stay cached, the next start computes the rest
    run_child TERM "$PYTHON" -m llava.train.cache_features "${ARGS[@]}" || status=$?
    if [[ -n "$STOP_REQUESTED" ]]; then requeue_or_exit "$status" "stopped while caching features, before training"; fi
    (( status == 0 )) || exit "$status"
fi
if [[ -n "$STOP_REQUESTED" ]]; then requeue_or_exit 0 "stopped before training started"; fi
run_child USR1 "${LAUNCH[@]}" "${ARGS[@]}" || status=$?
(( status != 0 )) || exit 0
if [[ -f "$INTERRUPTED" ]]; then
    requeue_or_exit "$status" "the training stopped on a signal: $(cat "$INTERRUPTED")"
elif [[ -n "$STOP_REQUESTED" ]]; then
    # e.g. the signal came while the ranks were starting, before they could catch it: nothing was
    # trained since the newest complete checkpoint, which the next start resumes from
    requeue_or_exit "$status" "the training ended on SIG$STOP_REQUESTED without a checkpoint of its own"
fi
exit "$status"

#!/usr/bin/env bash
# GPU checks, one script: CUDA paths of the model core at the seed's shapes (bf16, SDPA vs eager), then
# tiny training runs through train_italian_video.sh with DeepSpeed ZeRO-2 and ZeRO-3 in bf16 on one GPU.
# Wheels in .whl/ (packages the GPU machine lacks) are installed to /tmp/site first, if present.
# Outputs go to ${OUT:-/tmp/gpu_check}. STAGES (default "zero2 zero3") picks the training runs.
#
#   bash scripts/gpu_check.sh        # on a machine with an NVIDIA GPU, from anywhere
set -uo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,/^set /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
fi
if [[ $# -gt 0 ]]; then
    echo "error: gpu_check.sh takes no arguments, got '$1' (see bash scripts/gpu_check.sh --help)" >&2
    exit 2
fi
if ! command -v nvidia-smi >/dev/null; then
    echo "error: no NVIDIA GPU: nvidia-smi not found; these checks run on a GPU machine ($0)" >&2
    exit 1
fi
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if ! versions=$(python3 -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__, torch.cuda.get_device_name(0))" 2>&1); then
    echo "error: python3 cannot run the checks: ${versions##*$'\n'} ($(command -v python3))" >&2
    exit 1
fi
echo "$versions"
nvidia-smi -L

status=0
python3 scripts/check_cuda.py 2>&1 | grep -v Warning | tee "$OUT/check_cuda.log" || status=1

python3 - <<'PY'
from llava.demo.synthetic import caption_corpus, make_dataset, save_gpt2, train_tokenizer
from llava.testing import save_tiny_vision_tower
make_dataset("/tmp/gpu_assets/data", 64, 8)
save_gpt2("/tmp/gpu_assets/gpt2", train_tokenizer("/tmp/gpu_assets/tok", caption_corpus()), n_positions=256)
save_tiny_vision_tower("/tmp/gpu_assets/dinov2")
PY
for stage in ${STAGES:-zero2 zero3}; do
    start=$(date +%s)
    PYTHON=python3 bash train_italian_video.sh \
        --model_name_or_path /tmp/gpu_assets/gpt2 --vision_tower /tmp/gpu_assets/dinov2 \
        --data_path /tmp/gpu_assets/data/train.json --video_folder /tmp/gpu_assets/data/videos \
        --output_dir /tmp/gpu_run_$stage --deepspeed scripts/$stage.json --max_steps 40 \
        --per_device_train_batch_size 8 --learning_rate 2e-3 --mm_projector_lr 2e-3 --logging_steps 10 \
        --save_steps 20 --model_max_length 256 --mm_projector_hidden_size 64 --mm_packer_num_heads 4 \
        --dataloader_num_workers 2 --disable_tqdm True > "$OUT/train_$stage.log" 2>&1
    rc=$?
    echo "train $stage rc=$rc in $(( $(date +%s) - start )) s"; grep -E "'loss'|bf16|Error|error" "$OUT/train_$stage.log" | head -12
    python3 -c "
import llava.model, torch
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained('/tmp/gpu_run_$stage')
print('reloaded', type(m).__name__, 'finite', all(torch.isfinite(p).all().item() for p in m.parameters()))" 2>&1 | tail -1
    [ $rc -eq 0 ] || status=1
done
exit $status

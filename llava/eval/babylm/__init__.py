"""The 2025 BabyLM evaluation pipeline's tasks, scored here as that pipeline scores them
(github babylm/evaluation-pipeline-2025), for this project's checkpoints and any causal LM.

    python -m llava.eval.babylm zero_shot --model_path_or_name MODEL --backend causal --task TASK \\
        --data_path DATA_FOLDER [--save_predictions] [--revision_name chck_10M] ...
    python -m llava.eval.babylm reading --model_path_or_name MODEL --backend causal --data_path CSV
    python -m llava.eval.babylm devbench --model MODEL [--data_path DEVBENCH_DATA]

    python -m llava.eval.babylm export RUN_DIR OUT_DIR      # OUT_DIR/chck_1M/NAME ... OUT_DIR/main/NAME

`zero_shot`, `reading` and `devbench` take the flags of the pipeline's `sentence_zero_shot.run`,
`reading.run` and `devbench.eval` (swap the module name) and write its result files (zero_shot.py,
reading.py, devbench.py); `export` lays a run's milestones out under the revision names the pipeline's
`collate_preds` reads (export.py).
"""

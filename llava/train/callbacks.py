"""Training progress on the main process: a bar over optimizer steps with the latest loss and the
throughput in samples per second (nominal batch sizes: a skipped clip still counts)."""

from __future__ import annotations

import time

from tqdm.auto import tqdm
from transformers import TrainerCallback


class LossProgressBar(TrainerCallback):
    def __init__(self):
        self.bar = None
        self.loss = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and not args.disable_tqdm:
            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc="train", unit="step", dynamic_ncols=True
            )
            self.started, self.first_step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])
        if self.bar is not None and logs:
            # the logged numbers stay in the output, above the bar, as with the stock progress bar
            self.bar.write(str({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in logs.items()}))

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is None:
            return
        self.bar.update(state.global_step - self.bar.n)
        elapsed = time.perf_counter() - self.started
        samples = (
            (state.global_step - self.first_step)
            * args.per_device_train_batch_size
            * args.gradient_accumulation_steps
            * args.world_size
        )
        postfix = {"samples/s": f"{samples / elapsed:.1f}" if elapsed > 0 else "-"}
        if self.loss is not None:
            postfix = {"loss": f"{self.loss:.3f}", **postfix}
        self.bar.set_postfix(postfix, refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

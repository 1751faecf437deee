"""Trainer callbacks: keep the loss history on disk while a run goes, not only at its end.

A long run that is stopped (or crashes) still leaves ``loss_history.json`` and the PNG as of its
last validation, which is when one most wants to look at them.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from qeu_space.training.history import LossHistory

HISTORY_JSON = "loss_history.json"
HISTORY_PNG = "loss_history.png"


class LossHistoryCallback(TrainerCallback):
    """Write ``loss_history.json`` at each validation, and the PNG too at the end of training.

    Only the main process writes. Drawing takes about a second, so mid-run only the JSON is kept
    current.
    """

    def __init__(self, folder: str | Path, *, title: str = "") -> None:
        self.folder = Path(folder)
        self.title = title

    def write(self, args: TrainingArguments, state: TrainerState, *, plot: bool) -> LossHistory:
        history = LossHistory.from_log(
            state.log_history,
            best_metric=args.metric_for_best_model,
            best_checkpoint=state.best_model_checkpoint,
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        history.to_json(self.folder / HISTORY_JSON)
        if plot:
            history.plot(self.folder / HISTORY_PNG, title=self.title)
        return history

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        if state.is_world_process_zero:
            self.write(args, state, plot=False)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        if state.is_world_process_zero:
            self.write(args, state, plot=True)

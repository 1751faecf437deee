"""The loss history of a run: ``Trainer``'s log as a small typed record, JSON and a PNG plot.

The seeds judged their runs from a loss plot alone; here the plot carries the validation task
metric beside the losses so that "the loss falls but nothing is found" shows at a glance.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LossHistory:
    """Training and validation points by optimizer step.

    Attributes:
        train: ``{step, epoch, loss, learning_rate}`` per logged step.
        eval: ``{step, epoch, eval_loss, eval_<metric>...}`` per validation.
        best_metric: name of the metric that picked the best checkpoint (``eval_...``).
        best_checkpoint: that checkpoint's folder, if any.
    """

    train: list[dict[str, float]] = field(default_factory=list)
    eval: list[dict[str, float]] = field(default_factory=list)
    best_metric: str | None = None
    best_checkpoint: str | None = None

    @classmethod
    def from_log(
        cls,
        log_history: Sequence[Mapping[str, Any]],
        *,
        best_metric: str | None = None,
        best_checkpoint: str | None = None,
    ) -> LossHistory:
        """Split ``trainer.state.log_history`` into train and eval points (summaries dropped)."""
        train, evals = [], []
        for entry in log_history:
            numbers = {k: float(v) for k, v in entry.items() if isinstance(v, int | float)}
            if "loss" in entry:
                keep = ("step", "epoch", "loss", "learning_rate", "grad_norm")
                train.append({k: numbers[k] for k in keep if k in numbers})
            elif "eval_loss" in entry:
                evals.append(
                    {
                        k: v
                        for k, v in numbers.items()
                        if not k.endswith(("_runtime", "_per_second"))
                    }
                )
        return cls(train, evals, best_metric, best_checkpoint)

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read_json(cls, path: str | Path) -> LossHistory:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))

    def plot(self, path: str | Path, *, title: str = "") -> Path:
        """Losses (left axis) and the best-checkpoint metric (right axis) by step, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 4), dpi=100)
        ax = fig.add_subplot()
        if self.train:
            ax.plot(
                [p["step"] for p in self.train], [p["loss"] for p in self.train], label="train loss"
            )
        if self.eval:
            steps = [p["step"] for p in self.eval]
            ax.plot(steps, [p["eval_loss"] for p in self.eval], "o-", label="validation loss")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        handles, labels = ax.get_legend_handles_labels()
        metric = self.best_metric
        if metric and metric != "eval_loss" and any(metric in p for p in self.eval):
            right = ax.twinx()
            points = [(p["step"], p[metric]) for p in self.eval if metric in p]
            right.plot(*zip(*points, strict=True), "s--", color="tab:green", label=metric)
            right.set_ylabel(metric)
            more_h, more_l = right.get_legend_handles_labels()
            handles, labels = handles + more_h, labels + more_l
        if handles:
            ax.legend(handles, labels, loc="upper right")
        ax.set_title(title or "loss history")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path)
        return path

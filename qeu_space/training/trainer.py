"""``transformers.Trainer`` with a generation-based task metric at every validation.

``Trainer`` computes the validation loss; :class:`InspectionTrainer` adds the task metric to the
same metrics dict inside ``evaluation_loop``, so it is logged, seen by callbacks and used by
``load_best_model_at_end`` exactly like the loss. Under ``accelerate launch`` each process
generates on its share of the validation rows and the pairs are pooled before scoring.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import datasets
from accelerate.utils import gather_object
from peft import PeftModel
from transformers import PreTrainedModel, Trainer
from transformers.trainer_utils import EvalLoopOutput

from qeu_space.evaluation.evaluate import category_names
from qeu_space.modeling.loaded import LoadedModel
from qeu_space.training import validation


class InspectionTrainer(Trainer):
    """A ``Trainer`` that also scores generated answers on the validation split.

    Args:
        family: the model's family module (generates and parses).
        task: ``qa`` or ``od``.
        eval_samples: validation rows to generate on (0: loss only).
        max_new_tokens: generation length.
        train_collator: collator of training batches, if not ``data_collator`` (augmentation).
        *args, **kwargs: as for ``Trainer``.
    """

    def __init__(
        self,
        *args: Any,
        family: ModuleType,
        task: str,
        eval_samples: int = 64,
        max_new_tokens: int = 64,
        train_collator: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.train_collator = train_collator
        self.family = family
        self.task = task
        self.eval_samples = eval_samples
        self.max_new_tokens = max_new_tokens

    def get_train_dataloader(self) -> Any:
        """Training batches through ``train_collator`` (augmentation) when one is given."""
        if self.train_collator is None:
            return super().get_train_dataloader()
        evaluation, self.data_collator = self.data_collator, self.train_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = evaluation

    def _load_best_model(self) -> None:
        """Reload the best checkpoint of a fully trained model through ``from_pretrained``.

        ``save_pretrained`` writes the original (Hub) tensor names of models that transformers
        renamed (ViT's ``encoder.layer.N.attention.attention.query`` is ``layers.N.attention.
        q_proj`` in memory), and ``Trainer`` reads the file back with a plain
        ``load_state_dict``, which then matches nothing and keeps the last weights with only a
        warning. ``from_pretrained`` applies the renaming. Adapters load as ``Trainer`` does.
        """
        model = self.model
        if isinstance(model, PeftModel) or not isinstance(model, PreTrainedModel):
            super()._load_best_model()
            return
        best = type(model).from_pretrained(
            self.state.best_model_checkpoint, use_safetensors=True, dtype=model.dtype
        )
        model.load_state_dict(best.state_dict(), strict=True)

    def evaluation_loop(
        self,
        dataloader: Any,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
        )
        dataset = getattr(dataloader, "dataset", None)
        if self.eval_samples and isinstance(dataset, datasets.Dataset) and len(dataset):
            scores = self.task_metrics(dataset.select(range(min(self.eval_samples, len(dataset)))))
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in scores.items()})
        return output

    def task_metrics(self, rows: datasets.Dataset) -> dict[str, float]:
        """Generate on ``rows`` (this process's share) and score the pooled predictions."""
        world, rank = self.args.world_size, self.args.process_index
        share = rows.shard(num_shards=world, index=rank, contiguous=True) if world > 1 else rows
        loaded = LoadedModel(
            model=self.model,
            processor=self.processing_class,
            family=self.family.NAME,
            base=str(getattr(self.model, "name_or_path", "")),
            adapter=None,
            device=str(self.args.device),
        )
        texts = (
            self.family.generate(
                loaded,
                list(share["image"]),
                max_new_tokens=self.max_new_tokens,
                batch_size=self.args.per_device_eval_batch_size,
            )
            if len(share)
            else []
        )
        names = category_names(share) if self.task == "od" else None
        pairs = validation.counts(self.task, self.family, list(share), texts, names)
        pooled = gather_object(pairs) if world > 1 else pairs
        return validation.score(self.task, pooled)

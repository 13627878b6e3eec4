"""Class-weighted loss for imbalanced labels (FT_CLASS_WEIGHTS).

With plain cross-entropy a class of 1 row in 20 contributes 1/20 of the gradient, and a
model that never predicts it still looks good by accuracy. Weighting each row by the
inverse frequency of its class gives every class the same total say in the loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset

from job.labels import MULTI, REGRESSION, LabelSpec, class_counts

# Largest class over smallest (training rows, positives per label for multi-label) from
# which `auto` weights the loss; the same ratio from which `check` warns. At 10:1 a model
# that never predicts the small class still scores over 90% accuracy.
IMBALANCE_RATIO = 10.0
# A multi-label label with 3 positives in 3,000 rows would get a weight of 1,000: its few
# rows would dominate every batch they are in. The cap keeps the push without the noise.
MAX_POSITIVE_WEIGHT = 10.0


def imbalance(counts: dict[str, int]) -> float:
    """Largest count over smallest, among the labels that occur (1.0 when fewer than two do)."""
    present = [n for n in counts.values() if n > 0]
    return max(present) / min(present) if len(present) >= 2 else 1.0


def applies(mode: str, counts: dict[str, int]) -> bool:
    return mode == "balanced" or (mode == "auto" and imbalance(counts) >= IMBALANCE_RATIO)


def class_weights(mode: str, train: Dataset, spec: LabelSpec) -> list[float] | None:
    """Per-class weights (single-label) or per-label positive weights (multi-label) for the
    training loss; None where the loss stays unweighted."""
    if mode == "none" or spec.problem_type == REGRESSION:
        return None
    counts = class_counts(train, spec)
    if not applies(mode, counts):
        return None
    rows = len(train)
    if spec.problem_type == MULTI:
        # Each label is its own yes/no problem: weigh its positives up to its negatives.
        return [min(max((rows - n) / n, 1.0), MAX_POSITIVE_WEIGHT) if n else 1.0 for n in counts.values()]
    present = sum(1 for n in counts.values() if n)
    # scikit-learn's "balanced": rows / (classes * rows of the class); the weights average 1
    # over the training rows, so the loss keeps its scale and the learning rate its meaning.
    return [rows / (present * n) if n else 1.0 for n in counts.values()]


class WeightedLoss:
    """`compute_loss_func` for the Trainer: the weighted loss summed over the batch and
    divided by the number of labelled items the Trainer counted across gradient-accumulation
    steps and devices, as its own losses are, so accumulation does not change the gradient."""

    def __init__(self, weights: list[float], problem_type: str) -> None:
        self.weights = torch.tensor(weights, dtype=torch.float32)
        self.multi_label = problem_type == MULTI

    def __call__(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = (outputs["logits"] if isinstance(outputs, dict) else outputs[0]).float()
        weights = self.weights.to(logits.device)
        if self.multi_label:
            each = F.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=weights, reduction="none")
        else:
            each = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), weight=weights, reduction="none")
        count = num_items_in_batch if num_items_in_batch is not None else each.numel()
        return each.sum() / count

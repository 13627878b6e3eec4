"""The model the GPU bench trains: bert-base's shape with random weights (nothing to
download), saved as a classifier with the offline demo model's tokenizer, so both
training paths start from the same weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    intermediate: int


BERT_BASE = Shape(layers=12, hidden=768, heads=12, intermediate=3072)
TINY = Shape(layers=2, hidden=32, heads=2, intermediate=64)  # the CPU dry run


def build(shape: Shape, tokenizer_dir: str, folder: Path, seed: int) -> dict[str, Any]:
    """Writes the model and tokenizer to `folder`; returns the parameter counts MFU needs."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        num_labels=2,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    total = sum(p.numel() for p in model.parameters())
    # Embedding lookups are gathers, not matmuls: MFU counts the other parameters.
    embedding = sum(p.numel() for p in model.bert.embeddings.parameters())
    return {**asdict(shape), "vocab_size": config.vocab_size, "parameters": total,
            "non_embedding_parameters": total - embedding}  # fmt: skip

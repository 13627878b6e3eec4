"""The dry run's model: a 2-layer, 32-wide BERT with random weights and the real MiniLM
tokenizer (so real text gives real token ids and lengths, truncated at 512 like the real
run), saved without a classification head, as all-MiniLM-L6-v2 is. Seconds to train."""

from __future__ import annotations

from pathlib import Path


def build(tokenizer_dir: str, folder: Path) -> Path:
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    staging = folder.with_name(folder.name + ".partial")
    BertModel(config).save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(folder)
    return folder

"""Load the tokenizer and the sequence-classification model named by FT_MODEL."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from job import storage
from job.errors import ConfigError
from job.labels import LabelSpec
from job.settings import Settings
from job.storage import classify

# Architectures whose position ids start after the padding index, so two of
# `max_position_embeddings` are unusable (RoBERTa: 514 -> 512 tokens).
_OFFSET_POSITIONS = frozenset(
    {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "data2vec-text", "roberta-prelayernorm", "xmod"}
)
_NO_LIMIT = 100_000  # tokenizers without a limit report a huge sentinel


# What a BERT-family checkpoint needs; other weight formats (.bin pickles unless
# FT_ALLOW_PICKLE_WEIGHTS, ONNX, TF) are never downloaded.
_MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"]


def resolve_model(settings: Settings) -> Path:
    """A local folder holding FT_MODEL: as is, mirrored from S3, or downloaded from the Hub.

    Called once per node by the launcher; training workers get the folder and stay offline.
    """
    location = classify(settings.model, "FT_MODEL", what="model")
    if location.kind == "s3":
        return storage.fetch(location, settings, data_only=False)
    if location.kind == "local":
        return location.path
    from huggingface_hub import snapshot_download

    patterns = list(_MODEL_FILES)
    if settings.trust_remote_code:
        patterns.append("*.py")
    if settings.allow_pickle_weights:
        patterns.append("*.bin")
    try:
        return Path(
            snapshot_download(
                location.ref,
                revision=settings.model_revision,
                token=settings.hf_token.get_secret_value() if settings.hf_token else None,
                cache_dir=str(settings.cache_dir / "hub"),
                allow_patterns=patterns,
            )
        )
    except Exception as exc:
        raise ConfigError(_load_failure(settings, "files", exc)) from None


def _options(settings: Settings) -> dict[str, Any]:
    return {"trust_remote_code": settings.trust_remote_code}


def load_config(path: Path, settings: Settings) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(str(path), **_options(settings))
    except Exception as exc:
        raise ConfigError(_load_failure(settings, "config", exc)) from None


def load_tokenizer(path: Path, settings: Settings) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(str(path), **_options(settings))
    except Exception as exc:
        raise ConfigError(_load_failure(settings, "tokenizer", exc)) from None


def load_model(path: Path, settings: Settings, labels: LabelSpec) -> PreTrainedModel:
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            str(path),
            num_labels=labels.num_labels,
            id2label=labels.id2label,
            label2id={v: k for k, v in labels.id2label.items()},
            problem_type=labels.problem_type,
            # A checkpoint with a classifier for other labels (e.g. last production
            # model retrained on a new label set) gets a fresh head instead of failing.
            ignore_mismatched_sizes=True,
            use_safetensors=None if settings.allow_pickle_weights else True,
            **_options(settings),
        )
    except Exception as exc:
        raise ConfigError(_load_failure(settings, "weights", exc)) from None


def load_classifier(path: Path, config: PretrainedConfig, settings: Settings) -> PreTrainedModel:
    """A fine-tuned classifier exactly as saved: its own head and labels, nothing re-initialised."""
    architectures = config.architectures or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ConfigError(
            f"FT_MODEL='{settings.model}' is a {', '.join(architectures)}, not a sequence classifier; point FT_MODEL "
            "at a model trained by this job (its run folder, S3 prefix or Hub repo) or another fine-tuned "
            "*ForSequenceClassification checkpoint"
        )
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(path),
            config=config,
            use_safetensors=None if settings.allow_pickle_weights else True,
            output_loading_info=True,
            **_options(settings),
        )
    except Exception as exc:
        raise ConfigError(_load_failure(settings, "weights", exc)) from None
    missing = sorted(info["missing_keys"]) + sorted(k[0] for k in info["mismatched_keys"])
    if missing:
        # A head that is not in the file would be random: predictions would be noise.
        raise ConfigError(
            f"FT_MODEL='{settings.model}' has no trained weights for {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}; it is not a fine-tuned classifier — point FT_MODEL at a "
            "model trained by this job"
        )
    return model


def max_length(settings: Settings, tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> int:
    """FT_MAX_LENGTH, or the model's limit; never more than the limit."""
    limits = []
    if 0 < tokenizer.model_max_length < _NO_LIMIT:
        limits.append(int(tokenizer.model_max_length))
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        limits.append(positions - 2 if config.model_type in _OFFSET_POSITIONS else positions)
    limit = min(limits) if limits else 512
    if settings.max_length is None:
        return limit
    if settings.max_length > limit:
        raise ConfigError(
            f"FT_MAX_LENGTH={settings.max_length} is beyond the model's limit of {limit} tokens; "
            f"set FT_MAX_LENGTH to {limit} or less"
        )
    return settings.max_length


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Changes whenever the tokenizer would produce different ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    payload = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    payload += repr(sorted((k, str(v)) for k, v in tokenizer.special_tokens_map.items()))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _load_failure(settings: Settings, part: str, exc: BaseException) -> str:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    hint = "point FT_MODEL at a folder saved with save_pretrained or at a Hub model id"
    if part == "weights":
        hint += " that has model.safetensors weights (or allow .bin pickles with FT_ALLOW_PICKLE_WEIGHTS=true)"
    return f"FT_MODEL='{settings.model}': could not load the {part}: {reason}; {hint}"


def check_tokenizer_matches(tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> None:
    """A tokenizer with ids beyond the embedding table crashes mid-training; fail now."""
    vocab = getattr(config, "vocab_size", None)
    if vocab and len(tokenizer) > vocab:
        raise ConfigError(
            f"FT_MODEL: the tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab}; "
            "the tokenizer files do not belong to this model — save both from the same checkpoint"
        )

"""Load the tokenizer and the sequence-classification model named by FT_MODEL."""

from __future__ import annotations

import hashlib
import json
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
from job.files import sha256_of
from job.labels import LabelSpec
from job.settings import Settings
from job.storage import classify
from job.storage.credentials import TOKEN_HINT, hub_token

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
        return _model_folder(storage.fetch(location, settings, data_only=False), settings)
    if location.kind == "local":
        return _model_folder(location.path, settings)
    from huggingface_hub import snapshot_download

    patterns = list(_MODEL_FILES)
    if settings.trust_remote_code:
        patterns.append("*.py")
    if settings.allow_pickle_weights:
        patterns.append("*.bin")
    token = hub_token(settings)
    # No cache_dir: the standard Hub cache (HF_HUB_CACHE, HF_HOME), which an air-gapped
    # cluster may have filled in advance.
    try:
        return Path(
            snapshot_download(
                location.ref,
                revision=settings.model_revision,
                token=token,
                allow_patterns=patterns,
            )
        )
    except Exception as exc:
        raise ConfigError(_download_failure(settings, exc, token=token)) from None


def _model_folder(path: Path, settings: Settings) -> Path:
    """A folder saved with save_pretrained: a file, or a folder without config.json, is not one."""
    if path.is_file():
        raise ConfigError(
            f"FT_MODEL='{settings.model}' is a file; point FT_MODEL at the model's folder (config.json, weights, "
            "tokenizer files) or at a Hub model id"
        )
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"FT_MODEL='{settings.model}' has no config.json; point FT_MODEL at a folder saved with save_pretrained "
            "(config.json, weights, tokenizer files) or at a Hub model id"
        )
    return path


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


# What from_pretrained records about how this process read the tokenizer, and save_pretrained
# writes back: `local_files_only` (the job loads offline) and `is_local` describe this job's
# cache, not the tokenizer, and would read as settings to whoever loads the published model.
_LOAD_TIME_KEYS = ("local_files_only", "is_local", "cache_dir", "token", "_commit_hash")


def strip_load_options(folder: Path) -> None:
    """Drop the load-time keys from the tokenizer_config.json that save_pretrained wrote to `folder`."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if not any(key in config for key in _LOAD_TIME_KEYS):
        return
    kept = {k: v for k, v in config.items() if k not in _LOAD_TIME_KEYS}
    # The layout save_pretrained writes, so the file reads as the library's own.
    path.write_text(json.dumps(kept, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def load_model(path: Path, settings: Settings, labels: LabelSpec) -> PreTrainedModel:
    """The pretrained encoder with a new classification head for `labels`; every encoder weight
    must come from the file, as stated: ConfigError naming the ones that do not."""
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(path),
            num_labels=labels.num_labels,
            id2label=labels.id2label,
            label2id={v: k for k, v in labels.id2label.items()},
            problem_type=labels.problem_type,
            # A checkpoint with a classifier for other labels (e.g. last production
            # model retrained on a new label set) gets a fresh head instead of failing.
            ignore_mismatched_sizes=True,
            use_safetensors=None if settings.allow_pickle_weights else True,
            output_loading_info=True,
            **_options(settings),
        )
    except Exception as exc:
        raise ConfigError(_load_failure(settings, "weights", exc)) from None
    _check_encoder_loaded(model, info, settings)
    return model


def _check_encoder_loaded(model: PreTrainedModel, info: dict[str, Any], settings: Settings) -> None:
    """Only the head may be new. The encoder's weights (under its base-model prefix, `bert.`)
    all load from the file; its pooler may be new (masked-LM checkpoints have none, and the
    fine-tuning trains it with the head). Weights of other heads in the file (a pre-training
    head, `cls.*`) are dropped as expected. A config that does not match its weights (hidden
    size, vocabulary size) shows as encoder weights that are missing or of another shape,
    which transformers would silently re-initialise."""
    base = f"{model.base_model_prefix}."

    def encoder(key: str) -> bool:
        return key.startswith(base) and not key.startswith(f"{base}pooler.")

    missing = sorted(k for k in info["missing_keys"] if encoder(k))
    shapes = dict(sorted((k[0], (tuple(k[1]), tuple(k[2]))) for k in info["mismatched_keys"] if encoder(k[0])))
    unexpected = sorted(k for k in info["unexpected_keys"] if k.startswith(base))
    if not (missing or shapes or unexpected):
        return
    found = [f"{k}: {list(a)} in the file, {list(b)} in the config" for k, (a, b) in list(shapes.items())[:3]]
    found += [f"{k} missing from the file" for k in missing[:3]]
    found += [f"{k} in the file but not in the model" for k in unexpected[:3]]
    total = len(missing) + len(shapes) + len(unexpected)
    raise ConfigError(
        f"FT_MODEL='{settings.model}': {total} pretrained weight(s) would not load as stated ({'; '.join(found)}"
        f"{' ...' if total > len(found) else ''}); its config.json does not match its weights — save both from the "
        "same checkpoint, or point FT_MODEL at a folder that has them"
    )


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


def weights_fingerprint(path: Path) -> str:
    """Changes whenever the model's config or weights do: their bytes, wherever the folder lives."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.name == "config.json" or p.suffix in (".safetensors", ".bin")):
        digest.update(f"{file.name}:{sha256_of(file)}\n".encode())
    return digest.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Changes whenever the tokenizer would produce different ids. The truncation and padding
    a call last set on the fast tokenizer's backend are not part of it: they are per call."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        payload = json.dumps({k: v for k, v in state.items() if k not in ("truncation", "padding")}, sort_keys=True)
    else:
        payload = repr(sorted(tokenizer.get_vocab().items()))
    payload += repr(sorted((k, str(v)) for k, v in tokenizer.special_tokens_map.items()))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _load_failure(settings: Settings, part: str, exc: BaseException) -> str:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    hint = "point FT_MODEL at a folder saved with save_pretrained or at a Hub model id"
    if part == "weights":
        hint += " that has model.safetensors weights (or allow .bin pickles with FT_ALLOW_PICKLE_WEIGHTS=true)"
    return f"FT_MODEL='{settings.model}': could not load the {part}: {reason}; {hint}"


def _download_failure(settings: Settings, exc: BaseException, *, token: str | None) -> str:
    """A repo the Hub will not show (private, gated, or absent: it answers alike) names the token."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    status = exc.response.status_code if isinstance(exc, HfHubHTTPError) and exc.response is not None else None
    if isinstance(exc, RepositoryNotFoundError | GatedRepoError) or status in (401, 403):
        whose = "the Hugging Face token was refused" if token else "no Hugging Face token was found"
        return (
            f"FT_MODEL='{settings.model}': the Hub does not show this model ({whose}; status {status}); check the "
            f"model id, and for a private or gated model {TOKEN_HINT}"
        )
    return _load_failure(settings, "files", exc)


def check_tokenizer_matches(tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> None:
    """A tokenizer with ids beyond the embedding table crashes mid-training; fail now."""
    vocab = getattr(config, "vocab_size", None)
    if vocab and len(tokenizer) > vocab:
        raise ConfigError(
            f"FT_MODEL: the tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab}; "
            "the tokenizer files do not belong to this model — save both from the same checkpoint"
        )

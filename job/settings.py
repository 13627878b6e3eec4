"""Every knob of the job, read from `FT_*` environment variables (or a .env file).

Each field documents itself; the README's settings table is generated from this
class (`make docs`) and a test fails when the two drift apart.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, StringConstraints, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "FT_"

# The problem types (FT_PROBLEM_TYPE, and the `problem_type` a saved model's config carries).
SINGLE, MULTI, REGRESSION = "single_label_classification", "multi_label_classification", "regression"
ProblemType = Literal["auto", "single_label_classification", "multi_label_classification", "regression"]


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent starts."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ftjob"


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
        return [item for item in items if item] or None
    return value


def _split_mapping(value: Any) -> Any:
    """`train=a.csv,validation=b.csv` -> {"train": "a.csv", "validation": "b.csv"}."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    mapping: dict[str, str] = {}
    for item in value.split(","):
        split, sep, pattern = item.partition("=")
        if not sep or not split.strip() or not pattern.strip():
            raise ValueError(f"'{item.strip()}' is not of the form split=path")
        mapping[split.strip()] = pattern.strip()
    return mapping


Tracker = Literal["tensorboard", "mlflow", "wandb"]
TRACKERS: tuple[str, ...] = get_args(Tracker)


def _split_trackers(value: Any) -> Any:
    """`tensorboard,mlflow` -> ["tensorboard", "mlflow"]; `none` (the Trainer's word) or blank -> None."""
    if isinstance(value, str):
        items = [item.strip().lower() for item in value.split(",") if item.strip()]
        value = None if items in ([], ["none"]) else items
    return list(dict.fromkeys(value)) if value else None


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _numbers(value: Any, kind: type[float] | type[int]) -> list[Any] | None:
    if value is None:
        return None
    items = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value)
    items = [item for item in items if item != ""]
    if not items:
        return None
    numbers = []
    for item in items:
        try:
            numbers.append(kind(item))
        except (TypeError, ValueError):
            raise ValueError(f"'{item}' is not {'an integer' if kind is int else 'a number'}") from None
    return numbers


def _search_range(
    kind: type[float] | type[int], low: float, high: float, *, open_low: bool = False, open_high: bool = False
) -> Any:
    """`low,high` -> (low, high), within the bounds, low below high; empty: not searched."""

    def parse(value: Any) -> Any:
        numbers = _numbers(value, kind)
        if numbers is None:
            return None
        if len(numbers) != 2:
            raise ValueError(f"give two values, low,high (got {len(numbers)})")
        for number in numbers:
            above = low < number if open_low else low <= number
            below = number < high if open_high else number <= high
            if not (above and below):
                raise ValueError(f"{number:g} is out of bounds")
        if not numbers[0] < numbers[1]:
            raise ValueError(f"the low end {numbers[0]:g} must be below the high end {numbers[1]:g}")
        return tuple(numbers)

    return BeforeValidator(parse)


def _search_choices(value: Any) -> Any:
    """`16,32` -> (16, 32): distinct batch sizes; empty: not searched."""
    numbers = _numbers(value, int)
    if numbers is None:
        return None
    if any(not 1 <= n <= 65536 for n in numbers):
        raise ValueError("each batch size must be between 1 and 65536")
    if len(set(numbers)) != len(numbers):
        raise ValueError("a batch size is listed twice")
    return tuple(numbers)


CommaList = Annotated[list[str] | None, NoDecode, BeforeValidator(_split_list)]
# Hub language tags: ISO 639 codes, optionally with a region or script (`pt-BR`), or `multilingual`.
LanguageCode = Annotated[str, StringConstraints(pattern=r"^([a-z]{2,3}(-[A-Za-z0-9]{2,8})*|multilingual)$")]
LanguageList = Annotated[list[LanguageCode] | None, NoDecode, BeforeValidator(_split_list)]
SplitMapping = Annotated[dict[str, str] | None, NoDecode, BeforeValidator(_split_mapping)]
TrackerList = Annotated[list[Tracker] | None, NoDecode, BeforeValidator(_split_trackers)]
OptionalStr = Annotated[str | None, BeforeValidator(_blank_to_none)]
OptionalInt = Annotated[int | None, BeforeValidator(_blank_to_none)]
OptionalFloat = Annotated[float | None, BeforeValidator(_blank_to_none)]
# Hyperparameter search ranges: `low,high` (or a list of choices); empty: not searched.
LearningRateRange = Annotated[tuple[float, float] | None, NoDecode, _search_range(float, 0, 1, open_low=True)]
EpochRange = Annotated[tuple[int, int] | None, NoDecode, _search_range(int, 1, 1000)]
WarmupRange = Annotated[tuple[float, float] | None, NoDecode, _search_range(float, 0, 1, open_high=True)]
WeightDecayRange = Annotated[tuple[float, float] | None, NoDecode, _search_range(float, 0, 1)]
BatchSizeChoices = Annotated[tuple[int, ...] | None, NoDecode, BeforeValidator(_search_choices)]


def _field(group: str, description: str, *, allowed: str | None = None, **kwargs: Any) -> Any:
    extra: dict[str, Any] = {"group": group}
    if allowed:
        extra["allowed"] = allowed
    return Field(description=description, json_schema_extra=extra, **kwargs)


class Settings(BaseSettings):
    """The job's configuration. Precedence: environment > .env file > defaults."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
    )

    # --- run -------------------------------------------------------------------------
    run_id: str = _field(
        "run",
        "Name of this run; outputs go to `<FT_OUTPUT>/<run id>`. Re-using the id of a "
        "completed run is a no-op. Default: UTC start time plus a random suffix.",
        default_factory=new_run_id,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        allowed="1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    )
    output: str = _field(
        "run",
        "Where finished runs land: a local directory or `s3://bucket/prefix` (the run goes "
        "to `<FT_OUTPUT>/<run id>/`), or a Hub model repo `hf://org/name` (one commit per "
        "run). Nothing is published until the saved model passes its reload check. `python -m job predict` "
        "publishes its predictions the same way.",
        default="./outputs",
        min_length=1,
    )
    cache_dir: Path = _field(
        "run",
        "Local cache for tokenized data, S3 inputs and in-progress runs. Hub models and datasets "
        "go to the standard Hugging Face caches (`HF_HOME`, `HF_HUB_CACHE`, `HF_DATASETS_CACHE`), "
        "which may be filled in advance for offline use. Default: `$XDG_CACHE_HOME/ftjob` or `~/.cache/ftjob`.",
        default_factory=default_cache_dir,
    )
    log_format: Literal["auto", "json", "console"] = _field(
        "run",
        "`json`: one JSON object per line; `console`: human-readable; `auto`: console on a terminal, JSON otherwise.",
        default="auto",
    )
    log_level: Literal["debug", "info", "warning", "error"] = _field(
        "run", "Lowest level of log events written.", default="info"
    )

    # --- model -----------------------------------------------------------------------
    model: str = _field(
        "model",
        "Checkpoint to fine-tune: a Hub id (`org/name`) or a local folder saved with "
        "`save_pretrained`. Any BERT-family encoder with a sequence-classification head. For "
        "`python -m job predict`: the fine-tuned classifier to apply (a run's folder, S3 prefix or Hub repo).",
        min_length=1,
        allowed="a Hub model id (org/name) or a local model folder",
    )
    model_revision: OptionalStr = _field(
        "model", "Hub branch, tag or commit of the model; pin it for reproducible runs.", default=None
    )
    hf_token: Annotated[SecretStr | None, BeforeValidator(_blank_to_none)] = _field(
        "model",
        "Hugging Face access token for private or gated models and datasets and for publishing to "
        "`hf://`. Unset: the token `hf auth login` stored (under `HF_HOME`, or at `HF_TOKEN_PATH`). Never logged.",
        default=None,
        validation_alias=AliasChoices("HF_TOKEN", "FT_HF_TOKEN"),
    )
    trust_remote_code: bool = _field(
        "model",
        "Allow model or dataset repositories to run their own Python code. Off: only "
        "architectures built into transformers load.",
        default=False,
    )
    allow_pickle_weights: bool = _field(
        "model",
        "Also load `pytorch_model.bin` weights (Python pickles: loading one from an untrusted source can run "
        "code; torch's weights-only loader limits that). Off: safetensors only.",
        default=False,
    )
    max_length: OptionalInt = _field(
        "model",
        "Tokens per input: longer texts are split into windows of this many tokens (`FT_LONG_TEXTS`). "
        "Default: the model's limit (512 for BERT). Must not exceed the model's limit.",
        default=None,
        ge=8,
    )
    long_texts: Literal["auto", "windows", "truncate"] = _field(
        "model",
        "Texts longer than the max length: `windows` splits them into overlapping windows, trains on "
        "each with its text's label and scores a text by the mean of its windows' logits (evaluation, "
        "the reload check, `predict`); `truncate` keeps the first window only. `auto`: windows for "
        "training; for `predict`, what the model was trained with. Text pairs are always truncated.",
        default="auto",
    )
    window_overlap: OptionalInt = _field(
        "model",
        "Tokens that consecutive windows share, so no passage is seen only cut in two. Default: a "
        "quarter of a window. At most half of one.",
        default=None,
        ge=0,
    )
    max_windows: int = _field(
        "model",
        "At most this many windows per text, evenly spaced from its first to its last (longer texts "
        "lose passages in between); bounds the cost of very long texts.",
        default=8,
        ge=1,
    )

    # --- data ------------------------------------------------------------------------
    dataset: str = _field(
        "data",
        "Training data: a Hub dataset id (`imdb`, `glue`) or a local csv/json/jsonl/parquet "
        "file or directory (compressed files work). Splits come from file names "
        "(`train.csv`, `validation.csv`, `test.csv`) or `FT_DATA_FILES`. For `python -m job predict`: "
        "the rows to score.",
        min_length=1,
        allowed="a Hub dataset id or a local file or directory",
    )
    dataset_config: OptionalStr = _field(
        "data", "Hub dataset configuration name, e.g. `mrpc` for `glue`.", default=None
    )
    dataset_revision: OptionalStr = _field("data", "Hub branch, tag or commit of the dataset.", default=None)
    data_files: SplitMapping = _field(
        "data",
        "Explicit split files, `split=path[,split=path]`; paths may be globs and are "
        "relative to `FT_DATASET` when that is a directory.",
        default=None,
        allowed="comma-separated split=path pairs, e.g. train=a.csv,validation=b.csv",
    )
    data_format: Literal["auto", "csv", "json", "parquet"] = _field(
        "data", "File format of local data; `auto` reads it from the file extension.", default="auto"
    )
    train_split: str = _field("data", "Split to train on.", default="train", min_length=1)
    eval_split: OptionalStr = _field(
        "data",
        "Split to evaluate and select the best model on. Default: `validation`, `valid` or "
        "`dev` if present, else a stratified slice of the training split "
        "(`FT_VALIDATION_FRACTION`).",
        default=None,
    )
    test_split: OptionalStr = _field(
        "data",
        "Split to predict (and score, when labelled) after training. Default: `test` if present. `none` disables.",
        default=None,
    )
    text_column: str = _field("data", "Column holding the text.", default="text", min_length=1)
    text_pair_column: OptionalStr = _field(
        "data", "Column holding the second text of a pair (e.g. `sentence2` for MRPC).", default=None
    )
    label_column: str = _field("data", "Column holding the label.", default="label", min_length=1)
    labels: CommaList = _field(
        "data",
        "Label names to keep, in id order (comma-separated). Rows with other labels are "
        "dropped. Default: every label, in the dataset's ClassLabel order or sorted.",
        default=None,
        allowed="comma-separated label names",
    )
    problem_type: ProblemType = _field(
        "data",
        "`auto` infers it from the label column: lists -> multi-label, floats -> "
        "regression, anything else -> single-label.",
        default="auto",
    )
    label_separator: str = _field(
        "data",
        "Separator of label names inside one cell, for multi-label data stored as text (e.g. csv `sports|politics`).",
        default="|",
        min_length=1,
    )
    validation_fraction: float = _field(
        "data",
        "Share of the training split held out for evaluation when the dataset has no evaluation split.",
        default=0.1,
        gt=0,
        le=0.5,
    )
    max_train_samples: OptionalInt = _field(
        "data", "Train on a random subset of at most this many rows.", default=None, ge=1
    )
    max_eval_samples: OptionalInt = _field(
        "data", "Evaluate on a random subset of at most this many rows.", default=None, ge=1
    )
    max_test_samples: OptionalInt = _field(
        "data", "Predict on a random subset of at most this many test rows.", default=None, ge=1
    )

    # --- training --------------------------------------------------------------------
    epochs: OptionalFloat = _field(
        "training",
        "Passes over the training data. Unset: 3, or more on small data for at least 300 optimizer steps (at "
        "most 10); see *Defaults that adapt to the data*.",
        default=None,
        gt=0,
        le=1000,
    )
    max_steps: OptionalInt = _field(
        "training", "Stop after this many optimizer steps (overrides `FT_EPOCHS`).", default=None, ge=1
    )
    batch_size: OptionalInt = _field(
        "training",
        "Training batch size per device. Unset: the largest of 32, 16 and 8 that gives each epoch at least 100 "
        "optimizer steps (8 below that).",
        default=None,
        ge=1,
        le=65536,
    )
    eval_batch_size: OptionalInt = _field(
        "training",
        "Evaluation (and `predict`) batch size per device. Default: 2 x `FT_BATCH_SIZE` (64 in `predict` when "
        "it is unset).",
        default=None,
        ge=1,
    )
    gradient_accumulation_steps: int = _field(
        "training", "Batches accumulated per optimizer step.", default=1, ge=1, le=4096
    )
    learning_rate: OptionalFloat = _field(
        "training",
        "Peak learning rate (AdamW). Unset: by the model's hidden size, 1e-4 up to 384 (MiniLM), 5e-5 up to 768 "
        "(BERT-base), 2e-5 above.",
        default=None,
        gt=0,
        le=1,
    )
    weight_decay: float = _field(
        "training", "AdamW weight decay (not applied to biases and LayerNorm).", default=0.01, ge=0, le=1
    )
    warmup_ratio: float = _field(
        "training", "Share of the steps spent warming the learning rate up.", default=0.1, ge=0, lt=1
    )
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = _field(
        "training", "Learning-rate schedule after warm-up.", default="linear"
    )
    max_grad_norm: float = _field("training", "Clip gradients to this norm; 0 disables clipping.", default=1.0, ge=0)
    seed: int = _field(
        "training", "Seed for data splits, subsets, shuffling and weights.", default=42, ge=0, le=2**32 - 1
    )
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = _field(
        "training",
        "`auto`: bf16 on GPUs that support it, fp16 on older GPUs; on CPU bf16 where it has "
        "bf16 instructions (AVX512-BF16), else full precision.",
        default="auto",
    )
    class_weights: Literal["auto", "balanced", "none"] = _field(
        "training",
        "Weight the training loss by inverse class frequency so small classes count as much as large ones. "
        "`auto`: when the largest class has at least 10× the rows of the smallest (positives per label for "
        "multi-label); `balanced`: always; `none`: never. Classification and multi-label only.",
        default="auto",
    )
    decision_thresholds: Literal["auto", "tune", "fixed"] = _field(
        "training",
        "Binary and multi-label: `tune` picks the decision threshold (per label for multi-label) that "
        "maximizes macro-F1 (each label's F1) on the validation split, stores it in the model's config.json "
        "(`decision_thresholds`) and uses it for the metrics, test predictions and `predict`; `auto`: the same "
        "for an imbalanced problem (binary) or label (multi-label), one whose larger side has at least 10× the "
        "training rows of its smaller, 0.5 for the others; `fixed`: argmax, 0.5 per label. A tuned cut is kept "
        "only when it beats 0.5 on validation by 2 standard deviations (a sign test), and validation has 10 "
        "rows of either side.",
        default="auto",
    )
    group_by_length: bool = _field(
        "training", "Batch rows of similar length together so little padding is computed.", default=True
    )
    eval_steps: OptionalInt = _field(
        "training", "Evaluate every this many steps instead of once per epoch.", default=None, ge=1
    )
    logging_steps: int = _field(
        "training", "Log progress (and append to train_log.jsonl) every this many steps.", default=10, ge=1
    )
    metric_for_best_model: OptionalStr = _field(
        "training",
        "Evaluation metric that picks the best checkpoint. Default: `f1_macro` "
        "(classification, multi-label) or `rmse` (regression). `f1`, `precision` and "
        "`recall` are those of label id 1 for binary tasks, macro averages otherwise; so are "
        "`roc_auc` and `pr_auc` (the macro averages are one-vs-rest). `log_loss` is better "
        "lower. An AUC the validation split cannot have (a label without rows) is refused.",
        default=None,
    )
    early_stopping_patience: OptionalInt = _field(
        "training",
        "Stop after this many evaluations without improvement of the best-model metric. Unset: train for all epochs.",
        default=None,
        ge=1,
    )
    dataloader_workers: OptionalInt = _field(
        "training", "Data-loading worker processes. Default: 2 on GPU, 0 on CPU.", default=None, ge=0, le=64
    )

    # --- search -----------------------------------------------------------------------
    search_trials: int = _field(
        "search",
        "Hyperparameter search: before the final training, train this many trials (Optuna's TPE "
        "sampler, seeded by `FT_SEED`) over the `FT_SEARCH_*` ranges, each scored by the best-model "
        "metric on the evaluation split; the final run then uses the best trial's values. 0: no "
        "search. Needs the `hpo` extra (optuna); one node only.",
        default=0,
        ge=0,
        le=10000,
    )
    search_timeout: OptionalInt = _field(
        "search",
        "Start no new trial once the trials have taken this many seconds in all. Unset: no limit.",
        default=None,
        ge=1,
    )
    search_learning_rate: LearningRateRange = _field(
        "search",
        "Range searched for `FT_LEARNING_RATE`, on a log scale. Empty: `FT_LEARNING_RATE` is kept.",
        default="1e-5,1e-4",
        allowed="low,high with 0 < low < high <= 1, or empty",
    )
    search_batch_size: BatchSizeChoices = _field(
        "search",
        "Values tried for `FT_BATCH_SIZE`. Empty: `FT_BATCH_SIZE` is kept.",
        default="16,32",
        allowed="comma-separated distinct integers from 1 to 65536, or empty",
    )
    search_epochs: EpochRange = _field(
        "search",
        "Range of whole epochs searched for `FT_EPOCHS`. Empty: `FT_EPOCHS` is kept (needed with `FT_MAX_STEPS`).",
        default="1,4",
        allowed="low,high integers with 1 <= low < high <= 1000, or empty",
    )
    search_warmup_ratio: WarmupRange = _field(
        "search",
        "Range searched for `FT_WARMUP_RATIO`. Empty: `FT_WARMUP_RATIO` is kept.",
        default="0,0.2",
        allowed="low,high with 0 <= low < high < 1, or empty",
    )
    search_weight_decay: WeightDecayRange = _field(
        "search",
        "Range searched for `FT_WEIGHT_DECAY`. Empty: `FT_WEIGHT_DECAY` is kept.",
        default="0,0.1",
        allowed="low,high with 0 <= low < high <= 1, or empty",
    )

    # --- distributed ------------------------------------------------------------------
    procs_per_node: OptionalInt = _field(
        "distributed",
        "Training processes on this node. Default: one per visible GPU, or 1 without GPUs "
        "(2+ on CPU trains over gloo: slow, for testing).",
        default=None,
        ge=1,
        le=64,
    )
    num_nodes: OptionalInt = _field(
        "distributed",
        "Nodes in the run. Default: from the scheduler (SLURM, Kubeflow, torchrun variables); "
        "required for a Kubernetes Indexed Job (its completions).",
        default=None,
        ge=1,
        le=4096,
    )
    node_rank: OptionalInt = _field("distributed", "This node's rank. Default: from the scheduler.", default=None, ge=0)
    master_addr: OptionalStr = _field(
        "distributed", "Address of the rank-0 node for the rendezvous. Default: from the scheduler.", default=None
    )
    master_port: OptionalInt = _field(
        "distributed",
        "Rendezvous port on the rank-0 node. Default: 29500 (on SLURM, plus the job id mod 1000).",
        default=None,
        ge=1,
        le=65535,
    )
    k8s_service: OptionalStr = _field(
        "distributed",
        "Headless Service of a multi-node Kubernetes Indexed Job; rank 0 is reached at `<job name>-0.<service>`.",
        default=None,
    )
    ddp_timeout: int = _field(
        "distributed",
        "Seconds a process waits in a collective (or for peers to join) before the run fails, "
        "instead of hanging when a peer died.",
        default=600,
        ge=30,
        le=86400,
    )

    # --- checkpointing ----------------------------------------------------------------
    checkpoint_dir: OptionalStr = _field(
        "checkpointing",
        "Durable home of this run's checkpoints: a local or shared path (a PVC) or "
        "`s3://bucket/prefix`; they go to `<dir>/<run id>/checkpoint-<step>`. A run restarted "
        "with the same FT_RUN_ID resumes from the newest complete one. Default: "
        "`<FT_CACHE_DIR>/checkpoints`.",
        default=None,
    )
    save_steps: OptionalInt = _field(
        "checkpointing",
        "Also checkpoint every this many optimizer steps (besides each evaluation). Unset: only at evaluations.",
        default=None,
        ge=1,
    )
    save_total_limit: int = _field(
        "checkpointing",
        "Checkpoints kept; the best one so far is kept in addition.",
        default=2,
        ge=1,
        le=100,
    )
    changed_inputs: Literal["stop", "discard"] = _field(
        "checkpointing",
        "What a run does when its run id has checkpoints (or a search record) made with other inputs (training "
        "settings, data, model, tokenizer, labels, world size): `stop` with exit code 2, naming what changed; "
        "`discard` them and train from scratch. A run with unchanged inputs always resumes.",
        default="stop",
    )
    lease_seconds: int = _field(
        "checkpointing",
        "One live process per run id: the run holds a lease in `<FT_CHECKPOINT_DIR>/<run id>/`, renewed every "
        "quarter of this many seconds. A second process with the same run id stops at once (exit code 8) while "
        "the lease is fresh; a lease its owner stopped renewing (a killed process) is taken over once it expires.",
        default=60,
        ge=5,
        le=3600,
    )

    # --- promotion --------------------------------------------------------------------
    promote_min: OptionalFloat = _field(
        "promotion",
        "Promotion gate: the headline metric must reach this value (at most it, for loss-like "
        "metrics) for the run to become `latest`. Unset: no threshold.",
        default=None,
    )
    promote_if_better: bool = _field(
        "promotion",
        "Promotion gate: the headline metric must beat the one recorded in `<FT_OUTPUT>/latest.json` "
        "(the current production model). A run not promoted is kept as a candidate and exits with code 7.",
        default=False,
    )

    # --- storage ----------------------------------------------------------------------
    s3_endpoint_url: OptionalStr = _field(
        "storage",
        "Endpoint of an S3-compatible store (MinIO, Ceph, R2, ...). Default: the standard "
        "`AWS_ENDPOINT_URL`, else AWS. Credentials come only from the standard AWS chain "
        "(environment, profile, web identity/IRSA, instance role), never from FT_ settings.",
        default=None,
        pattern=r"^https?://\S+$",
        allowed="an http:// or https:// URL",
    )
    s3_region: OptionalStr = _field(
        "storage", "S3 region. Default: `AWS_REGION` / `AWS_DEFAULT_REGION` / the profile's.", default=None
    )
    s3_addressing_style: Literal["auto", "path", "virtual"] = _field(
        "storage", "Bucket addressing; many S3-compatible stores need `path`.", default="auto"
    )
    s3_max_concurrency: int = _field(
        "storage", "Parallel transfers (files and multipart parts) to and from S3.", default=10, ge=1, le=64
    )
    s3_multipart_chunk_mb: int = _field(
        "storage",
        "Objects above this size (MiB) move in parts of this size; S3 needs at least 5.",
        default=64,
        ge=5,
        le=5120,
    )
    s3_max_attempts: int = _field(
        "storage",
        "Attempts per S3 request on throttling, 5xx errors, dropped connections and timeouts, "
        "with exponential backoff.",
        default=10,
        ge=1,
        le=50,
    )
    s3_timeout: int = _field(
        "storage",
        "Seconds to wait for an S3 connection or answer before the request counts as failed (and is retried).",
        default=60,
        ge=1,
        le=3600,
    )
    hub_private: bool = _field(
        "storage", "Create the Hub repository as private when `FT_OUTPUT` is `hf://org/name`.", default=True
    )
    hub_revision: OptionalStr = _field(
        "storage", "Hub branch to publish to (created from `main` if missing). Default: `main`.", default=None
    )

    # --- verification -----------------------------------------------------------------
    verify_samples: int = _field(
        "verification",
        "Evaluation rows the saved model is reloaded and re-scored on before the run counts as successful.",
        default=16,
        ge=1,
        le=4096,
    )

    # --- prediction (`python -m job predict`) ------------------------------------------
    predict_split: OptionalStr = _field(
        "prediction",
        "Split of `FT_DATASET` to score with `python -m job predict`. Default: `test` if present, else the only "
        "split, else `train`.",
        default=None,
    )
    predict_all_scores: bool = _field(
        "prediction",
        "Add every label's probability (`scores`) to each prediction, not only the predicted label's "
        "(multi-label predictions always have them).",
        default=False,
    )
    predict_id_column: OptionalStr = _field(
        "prediction",
        "Column copied into each prediction as `id` (e.g. a document id), to join predictions back to the "
        "source rows. Unset: rows are identified by `index`, their position in the split.",
        default=None,
    )

    # --- reporting --------------------------------------------------------------------
    charts: bool = _field(
        "reporting",
        "Draw `training_curves.png` and `confusion_matrix.png` (regression: `prediction_scatter.png`) "
        "beside the metrics and show them in the model card. A chart that fails to draw is logged "
        "and left out; it never fails the run.",
        default=True,
    )
    report_to: TrackerList = _field(
        "reporting",
        "Experiment trackers the Trainer reports losses and metrics to: `tensorboard` (offline; event "
        "files published with the model under `tensorboard/`), `mlflow`, `wandb` (configured by their "
        "own variables, e.g. `MLFLOW_TRACKING_URI`, `WANDB_PROJECT`). Each needs its extra: "
        "`pip install 'ftjob[tensorboard]'`. Unset: none.",
        default=None,
        allowed=f"comma-separated tracker names: {', '.join(TRACKERS)} (or none)",
    )

    license: OptionalStr = _field(
        "reporting",
        "License of the fine-tuned model, as a Hub license id (`apache-2.0`, `mit`, `cc-by-4.0`, ...), for the "
        "model card's metadata. Mind the base model's and the data's licenses. Unset: none stated.",
        default=None,
        pattern=r"^[a-z0-9][a-z0-9.+-]*$",
        allowed="a Hub license id in lower case, e.g. apache-2.0",
    )
    language: LanguageList = _field(
        "reporting",
        "Languages of the training texts, as ISO 639 codes (`en`, `de,fr`), for the model card's metadata. "
        "Unset: none stated.",
        default=None,
        allowed="comma-separated ISO 639-1/2/3 codes (e.g. en or de,fr), or multilingual",
    )

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.text_pair_column and self.text_pair_column == self.text_column:
            raise ValueError(f"FT_TEXT_PAIR_COLUMN must differ from FT_TEXT_COLUMN (both are '{self.text_column}')")
        if self.label_column in {self.text_column, self.text_pair_column}:
            raise ValueError(f"FT_LABEL_COLUMN '{self.label_column}' is also used as a text column")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError(f"FT_LABELS lists a label twice: {','.join(self.labels)}")
        if self.node_rank is not None and self.num_nodes is not None and self.node_rank >= self.num_nodes:
            raise ValueError(f"FT_NODE_RANK={self.node_rank} must be below FT_NUM_NODES={self.num_nodes}")
        if self.search_trials:
            self._check_search()
        return self

    def _check_search(self) -> None:
        searched = (
            self.search_learning_rate,
            self.search_batch_size,
            self.search_epochs,
            self.search_warmup_ratio,
            self.search_weight_decay,
        )
        if all(value is None for value in searched):
            raise ValueError(
                f"FT_SEARCH_TRIALS={self.search_trials} but every FT_SEARCH_* range is empty; "
                "give at least one range or set FT_SEARCH_TRIALS=0"
            )
        if self.search_epochs is not None and self.max_steps is not None:
            raise ValueError(
                "FT_SEARCH_EPOCHS has no effect when FT_MAX_STEPS is set (steps override epochs); "
                "set FT_SEARCH_EPOCHS empty or unset FT_MAX_STEPS"
            )

    # --- derived ----------------------------------------------------------------------
    @property
    def test_split_disabled(self) -> bool:
        return (self.test_split or "").lower() == "none"

    def run_work_dir(self) -> Path:
        """Scratch space of this run: staging area and checkpoints."""
        return self.cache_dir / "runs" / self.run_id


def env_name(field_name: str) -> str:
    """The environment variable a user sets for a field (its alias, if it has one)."""
    field = Settings.model_fields[field_name]
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return ENV_PREFIX + field_name.upper()


def redacted(settings: Settings) -> dict[str, Any]:
    """Settings keyed by environment variable, secrets masked (tokens, and credentials inside
    URLs); safe to log or publish."""
    from job.redaction import MASK, redact_url

    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = MASK if value.get_secret_value() else ""
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, str):
            value = redact_url(value)
        out[env_name(name)] = value
    return out


def as_environment(settings: Settings) -> dict[str, str]:
    """The settings as the variables that would produce them, secrets left out: how the
    launcher hands its exact configuration to training workers."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            continue
        if value is None:
            text = ""
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            text = ",".join(str(item) for item in value)
        elif isinstance(value, dict):
            text = ",".join(f"{k}={v}" for k, v in value.items())
        else:
            text = str(value)
        env[env_name(name)] = text
    return env


def unknown_prefixed_variables(environ: dict[str, str]) -> list[tuple[str, str | None]]:
    """`FT_*` variables that are not settings, each with the closest real name."""
    import difflib

    known = {env_name(name) for name in Settings.model_fields} | {ENV_PREFIX + "HF_TOKEN"}
    unknown = sorted(k for k in environ if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)
    return [(k, next(iter(difflib.get_close_matches(k.upper(), known, n=1, cutoff=0.75)), None)) for k in unknown]

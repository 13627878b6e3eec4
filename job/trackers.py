"""Experiment trackers (FT_REPORT_TO): TensorBoard event files written beside the model,
MLflow and Weights & Biases through the Trainer's own integrations.

The Trainer reports from the main process only; MLflow and W&B read their own
variables (MLFLOW_TRACKING_URI, WANDB_PROJECT, WANDB_API_KEY, ...).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback
from transformers.integrations.integration_utils import rewrite_logs

from job.errors import ConfigError
from job.settings import Settings

TENSORBOARD_DIR = "tensorboard"  # inside the model folder, so the events are published with it

# The module each tracker needs; the pip extra of the same name installs it.
_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def check_available(settings: Settings) -> None:
    """Fail before any work when a requested tracker's package is missing."""
    missing = [name for name in settings.report_to or () if importlib.util.find_spec(_MODULES[name]) is None]
    if missing:
        extras = ",".join(missing)
        raise ConfigError(
            f"FT_REPORT_TO={','.join(settings.report_to or ())} needs {', '.join(_MODULES[m] for m in missing)}, "
            f"which is not installed; pip install 'ftjob[{extras}]' or leave {', '.join(missing)} out of FT_REPORT_TO"
        )


def report_to(settings: Settings) -> list[str]:
    """The Trainer's `report_to`: TensorBoard is left out, `callbacks` adds it with its folder."""
    return [name for name in settings.report_to or () if name != "tensorboard"]


def callbacks(settings: Settings, staging: Path) -> list[TrainerCallback]:
    if "tensorboard" not in (settings.report_to or ()):
        return []
    return [TensorBoardLog(staging / TENSORBOARD_DIR)]


class TensorBoardLog(TensorBoardCallback):
    """The Trainer's TensorBoard reporting, into a folder of our choosing (the stock callback
    takes it from a process-wide variable). A resumed run starts with an empty folder, so the
    history saved in the checkpoint is written first: the published events cover the whole run."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.logging_dir = str(folder)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        super().on_train_begin(args, state, control, **kwargs)
        if not state.is_world_process_zero or self.tb_writer is None:
            return
        for entry in state.log_history:
            step = entry.get("step", 0)
            logs = {k: v for k, v in entry.items() if k != "step"}
            for key, value in rewrite_logs(logs).items():
                if isinstance(value, (int, float)):
                    self.tb_writer.add_scalar(key, value, step)
        self.tb_writer.flush()

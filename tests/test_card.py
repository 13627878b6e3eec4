"""The model card of a real run: huggingface_hub reads its metadata back (offline), its
usage snippet runs, and it names inputs by what a reader can use, never by a local path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import rows, write
from huggingface_hub import EvalResult, ModelCard, ModelCardData, metadata_load

from job import card
from job.main import main


def snippet(text: str) -> str:
    return text.split("## Usage", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture
def run(make_settings, tmp_path: Path):
    data = tmp_path / "reviews"
    write(data / "train.csv", rows("binary", 120))
    write(data / "test.csv", rows("binary", 20, 1))
    settings = make_settings(dataset=str(data), epochs=1, license="apache-2.0", language="en,pt-BR")
    return settings, Path(main(settings)["location"])


def test_the_card_is_a_valid_hub_card_with_the_runs_results(run) -> None:
    settings, folder = run
    loaded = ModelCard.load(folder / "README.md")
    data = loaded.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-classification"
    assert data.license == "apache-2.0" and data.language == ["en", "pt-BR"]
    assert {"text-classification", "ftjob"} <= set(data.tags)
    # A local model and a local dataset: no Hub id to give, so none is made up.
    assert data.base_model is None and data.datasets is None
    # The same metadata, read the way the Hub's own tools read a README, parses into EvalResults.
    reparsed = ModelCardData(**metadata_load(folder / "README.md"))
    assert reparsed.model_name == settings.run_id and reparsed.eval_results == data.eval_results

    metrics = json.loads((folder / "metrics.json").read_text())
    results = {(r.dataset_split, r.metric_type): r for r in data.eval_results}
    assert {split for split, _ in results} == {"validation", "test"}
    for (split, name), result in results.items():
        assert isinstance(result, EvalResult) and result.task_type == "text-classification"
        assert result.metric_value == metrics[split][name]
        assert result.dataset_type == "private" and result.dataset_name == "reviews"
    assert ("validation", "f1_macro") in results and ("test", "accuracy") in results


def test_the_card_names_no_local_path(run, tmp_path: Path, tiny_model: Path) -> None:
    _, folder = run
    text = (folder / "README.md").read_text()
    usage = snippet(text)
    outside = text.replace(usage, "")  # the snippet loads the published folder, by its path
    assert str(tmp_path) not in outside and str(tiny_model) not in outside and "/tmp/" not in outside
    assert f"a private dataset, `reviews` ({metrics_rows(folder):,} training rows)" in text
    assert f"Fine-tuned from a local model (`{tiny_model.name}`) for" in text


def metrics_rows(folder: Path) -> int:
    return json.loads((folder / "run_manifest.json").read_text())["data"]["rows"]["train"]


def test_the_usage_snippet_runs_on_a_text_longer_than_the_model_takes(run) -> None:
    _, folder = run
    usage = snippet((folder / "README.md").read_text())
    assert "truncation=True" in usage and "revision=" not in usage  # a folder has no branch
    namespace: dict = {}
    exec(usage, namespace)  # the card's own code, as a reader would run it
    long_text = " ".join(["the film was great"] * 100)  # 400 words; the tiny model takes 64 positions
    assert namespace["classifier"](long_text)[0]["label"] in {"0", "1"}


def test_hub_ids_are_named_as_ids(run) -> None:
    """The same run's documents, rendered as if FT_MODEL and FT_DATASET were Hub ids."""
    settings, folder = run
    hub = settings.model_copy(
        update={"model": "hf://google-bert/bert-base-uncased", "dataset": "nyu-mll/glue", "dataset_config": "sst2",
                "dataset_revision": "bcdcba7", "license": None, "language": None}
    )  # fmt: skip
    document = json.loads((folder / "metrics.json").read_text())
    manifest = json.loads((folder / "run_manifest.json").read_text())
    text = card.render(hub, document, manifest, model_ref="acme/sentiment", model_revision="candidate")
    loaded = ModelCard(text)
    assert loaded.data.base_model == "google-bert/bert-base-uncased" and loaded.data.datasets == ["nyu-mll/glue"]
    assert "license" not in loaded.data.to_dict() and "language" not in loaded.data.to_dict()
    result = loaded.data.eval_results[0]
    assert (result.dataset_type, result.dataset_config, result.dataset_revision) == ("nyu-mll/glue", "sst2", "bcdcba7")
    assert "Fine-tuned from `google-bert/bert-base-uncased` for" in text and "on `nyu-mll/glue` (`sst2`)" in text
    usage = snippet(text)
    assert re.search(r'model="acme/sentiment", revision="candidate",', usage) and "truncation=True" in usage

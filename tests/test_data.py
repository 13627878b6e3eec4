"""Loading, split selection, labels and tokenization on real files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import rows, write
from transformers import AutoTokenizer

from job import data
from job.errors import ConfigError, DataError
from job.prepare import prepare
from job.storage import Location


def prepared_for(settings, tiny_model: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    return prepare(settings, tokenizer, settings.max_length or 64)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".csv.bz2"])
def test_directory_splits_by_file_name(make_settings, tmp_path: Path, tiny_model: Path, suffix: str) -> None:
    folder = tmp_path / "data"
    if suffix == ".csv.bz2":
        import pandas as pd

        folder.mkdir()
        pd.DataFrame(rows("binary", 40)).to_csv(folder / "train.csv.bz2", index=False)
        pd.DataFrame(rows("binary", 10, 1)).to_csv(folder / "dev.csv.bz2", index=False)
        pd.DataFrame(rows("binary", 6, 2)).to_csv(folder / "test.csv.bz2", index=False)
    else:
        write(folder / f"train{suffix}", rows("binary", 40))
        write(folder / f"validation{suffix}", rows("binary", 10, 1))
        write(folder / f"test{suffix}", rows("binary", 6, 2))
    prepared = prepared_for(make_settings(dataset=str(folder)), tiny_model)
    assert {name: len(split) for name, split in prepared.splits.items()} == {"train": 40, "validation": 10, "test": 6}
    assert prepared.labels.names == ("0", "1") and prepared.test_scored


def test_explicit_split_files_with_globs(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    write(tmp_path / "d" / "part-a.jsonl", rows("binary", 20))
    write(tmp_path / "d" / "part-b.jsonl", rows("binary", 20, 1))
    write(tmp_path / "d" / "holdout.jsonl", rows("binary", 8, 2))
    settings = make_settings(
        dataset=str(tmp_path / "d"), data_files={"train": "part-*.jsonl", "validation": "holdout.jsonl"}
    )
    prepared = prepared_for(settings, tiny_model)
    assert len(prepared.train) == 40 and len(prepared.validation) == 8 and prepared.test is None


def test_single_file_gets_a_stratified_validation_split(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    records = [{"text": f"film story {i}", "label": "rare" if i % 5 == 0 else "common"} for i in range(200)]
    settings = make_settings(dataset=str(write(tmp_path / "all.csv", records)), validation_fraction=0.25)
    prepared = prepared_for(settings, tiny_model)
    assert len(prepared.validation) == 50 and len(prepared.train) == 150
    counts = Counter(prepared.validation["labels"])
    assert counts[prepared.labels.names.index("rare")] == 10  # exactly the 20% share of 50
    assert prepared.meta["source_splits"]["validation"] == "train (held-out 25%)"


def test_caps_take_a_seeded_random_subset(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "d"
    write(folder / "train.csv", rows("binary", 100))
    write(folder / "validation.csv", rows("binary", 50, 1))
    first = prepared_for(make_settings(dataset=str(folder), max_train_samples=30, max_eval_samples=12), tiny_model)
    assert len(first.train) == 30 and len(first.validation) == 12
    assert sorted(first.train["index"]) != list(range(30))  # random rows, not the first ones
    other = prepared_for(
        make_settings(dataset=str(folder), max_train_samples=30, max_eval_samples=12, seed=7), tiny_model
    )
    assert sorted(other.train["index"]) != sorted(first.train["index"])


def test_tokenized_without_padding_and_cached(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "d"
    write(folder / "train.csv", rows("binary", 60))
    settings = make_settings(dataset=str(folder), max_length=12)
    prepared = prepared_for(settings, tiny_model)
    lengths = [len(ids) for ids in prepared.train["input_ids"]]
    assert lengths == prepared.train["length"] and len(set(lengths)) > 3  # unpadded: lengths vary
    assert max(lengths) <= 12
    assert prepared.validation["length"] == sorted(prepared.validation["length"], reverse=True)
    again = prepared_for(settings, tiny_model)
    assert again.path == prepared.path  # same inputs: the same cache entry, loaded not rebuilt
    changed = prepared_for(make_settings(dataset=str(folder), max_length=16), tiny_model)
    assert changed.path != prepared.path


def test_string_labels_sorted_and_ints_sorted_numerically(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    records = [{"text": f"story {i}", "label": label} for i, label in enumerate([10, 9, 2] * 10)]
    prepared = prepared_for(make_settings(dataset=str(write(tmp_path / "n.csv", records))), tiny_model)
    assert prepared.labels.names == ("2", "9", "10")
    records = [{"text": f"story {i}", "label": label} for i, label in enumerate(["pos", "neg", "mixed"] * 10)]
    prepared = prepared_for(make_settings(dataset=str(write(tmp_path / "s.csv", records))), tiny_model)
    assert prepared.labels.names == ("mixed", "neg", "pos")


def test_class_label_order_is_kept(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    from datasets import ClassLabel, Dataset

    dataset = Dataset.from_dict({"text": [f"plot {i}" for i in range(20)], "label": [i % 2 for i in range(20)]})
    dataset = dataset.cast_column("label", ClassLabel(names=["zeta", "alpha"]))
    (tmp_path / "cl").mkdir()
    dataset.to_parquet(tmp_path / "cl" / "train.parquet")
    prepared = prepared_for(make_settings(dataset=str(tmp_path / "cl")), tiny_model)
    assert prepared.labels.names == ("zeta", "alpha")


def test_label_list_selects_and_orders(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    records = [{"text": f"story {i}", "label": ["fresh", "rotten", "plot"][i % 3]} for i in range(90)]
    settings = make_settings(dataset=str(write(tmp_path / "rt.csv", records)), labels=["rotten", "fresh"])
    prepared = prepared_for(settings, tiny_model)
    assert prepared.labels.names == ("rotten", "fresh")
    assert len(prepared.train) + len(prepared.validation) == 60  # the 30 "plot" rows are dropped


def test_empty_texts_are_dropped_and_counted(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    records = [*rows("binary", 40), {"text": "   ", "label": 1}, {"text": None, "label": 0}]
    prepared = prepared_for(make_settings(dataset=str(write(tmp_path / "e.jsonl", records))), tiny_model)
    assert prepared.meta["dropped_empty_text"] == {"train": 2}
    assert len(prepared.train) + len(prepared.validation) == 40


def test_unlabelled_test_split_is_predicted_not_scored(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "d"
    write(folder / "train.csv", rows("binary", 40))
    write(folder / "test.csv", [{"text": r["text"]} for r in rows("binary", 8, 3)])
    prepared = prepared_for(make_settings(dataset=str(folder)), tiny_model)
    assert prepared.test is not None and len(prepared.test) == 8 and not prepared.test_scored


def test_hub_code_path_with_a_local_stand_in_repo(make_settings, tmp_path: Path) -> None:
    # A folder laid out like a Hub dataset repo with two configs (like glue/mrpc),
    # loaded through the same load_dataset(repo, name=, revision=) call as a Hub id.
    repo = tmp_path / "glue-like"
    write(repo / "mrpc" / "train.csv", rows("pairs", 12))
    write(repo / "sst2" / "train.csv", rows("binary", 7))
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: mrpc\n  data_files:\n  - split: train\n    path: mrpc/train.csv\n"
        "- config_name: sst2\n  data_files:\n  - split: train\n    path: sst2/train.csv\n---\n"
    )
    settings = make_settings(dataset="org/glue-like", dataset_config="sst2")
    splits = data._load(Location("hub", str(repo)), settings).splits
    assert len(splits["train"]) == 7
    with pytest.raises(DataError, match=r"could not load dataset .*; check FT_DATASET, FT_DATASET_CONFIG"):
        data._load(Location("hub", str(repo)), make_settings(dataset="org/glue-like", dataset_config="nope"))


# --- bad input: one clear error each --------------------------------------------------


def expect(error: type[Exception], match: str, settings, tiny_model: Path) -> None:
    with pytest.raises(error, match=match) as caught:
        prepared_for(settings, tiny_model)
    assert "\n" not in str(caught.value)


def test_missing_column_lists_the_available_ones(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    path = write(tmp_path / "x.csv", rows("string", 20))
    settings = make_settings(dataset=str(path), label_column="sentiment")
    expect(
        DataError,
        r"column 'text' is not in split 'train' \(columns: review, sentiment\); set FT_TEXT_COLUMN",
        settings,
        tiny_model,
    )


def test_missing_split_lists_the_available_ones(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    write(tmp_path / "d" / "train.csv", rows("binary", 20))
    settings = make_settings(dataset=str(tmp_path / "d"), eval_split="dev")
    expect(DataError, r"split 'dev' is not in dataset .* \(it has: train\); set FT_EVAL_SPLIT", settings, tiny_model)


def test_null_labels_are_an_error(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    records = [*rows("binary", 20), {"text": "film", "label": None}]
    settings = make_settings(dataset=str(write(tmp_path / "n.jsonl", records)))
    expect(DataError, r"1 row\(s\) of split 'train' have no label in column 'label'", settings, tiny_model)


def test_single_class_is_an_error(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    records = [{"text": f"story {i}", "label": "pos"} for i in range(20)]
    settings = make_settings(dataset=str(write(tmp_path / "one.csv", records)))
    expect(
        DataError,
        r"has 1 label value\(s\) in column 'label' \(pos\); classification needs at least two",
        settings,
        tiny_model,
    )


def test_eval_label_unseen_in_training_is_an_error(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    write(tmp_path / "d" / "train.csv", rows("string", 20))
    write(tmp_path / "d" / "validation.csv", [*rows("string", 4), {"review": "x", "sentiment": "meh"}])
    settings = make_settings(dataset=str(tmp_path / "d"), text_column="review", label_column="sentiment")
    expect(DataError, r"split 'validation' has label\(s\) not seen in training: 'meh'", settings, tiny_model)


def test_non_utf8_file_is_a_data_error(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"text,label\n" + "café crème,1\n".encode("latin-1") * 20 + b"bad,0\n" * 20)
    expect(
        DataError,
        r"latin1.csv is not UTF-8 text \(line 2: invalid continuation byte\); re-encode the file as UTF-8",
        make_settings(dataset=str(path)),
        tiny_model,
    )


def test_directory_without_data_files(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    expect(
        DataError,
        "holds no csv, json, jsonl or parquet files",
        make_settings(dataset=str(tmp_path / "empty")),
        tiny_model,
    )


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("gs://bucket/data", r"FT_DATASET='gs://bucket/data' uses the unsupported scheme 'gs://'"),
        ("./missing/train.csv", r"FT_DATASET='./missing/train.csv' does not exist"),
        ("data.csv", r"FT_DATASET='data.csv' does not exist"),
    ],
)
def test_bad_dataset_locations(make_settings, tiny_model: Path, value: str, match: str) -> None:
    expect(ConfigError, match, make_settings(dataset=value), tiny_model)

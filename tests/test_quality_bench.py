"""The quality bench's pieces that need no model: reading files out of packages, the ARFF
rows, the per-seed draw, and the statistics of the results file. The dry run end to end
is in test_bench.py."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from bench.quality import archives, report, samples, sources


def _tar_xz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def test_reads_a_file_out_of_a_debian_package(tmp_path: Path) -> None:
    # The layout apt-get download gives: ar(debian-binary, control.tar.xz, data.tar.xz).
    payload = b"@data\n'odd length',1\n"
    deb = tmp_path / "demo_1.0_all.deb"
    deb.write_bytes(
        archives.AR_MAGIC
        + _ar_member("debian-binary", b"2.0\n")
        + _ar_member("control.tar.xz", _tar_xz({"./control": b"Package: demo\n"}))
        + _ar_member("data.tar.xz", _tar_xz({"./usr/share/doc/demo/a.arff": payload}))
    )
    assert archives.member(deb, "usr/share/doc/demo/a.arff") == payload
    with pytest.raises(archives.AssetError, match="no file"):
        archives.member(deb, "usr/share/doc/demo/missing.arff")


def test_a_changed_file_is_refused() -> None:
    data = b"rows"
    assert archives.checked(data, hashlib.sha256(data).hexdigest(), "x") == data
    with pytest.raises(archives.AssetError, match="sha256"):
        archives.checked(b"other rows", hashlib.sha256(data).hexdigest(), "x")


def test_arff_rows_unescape_weka_strings() -> None:
    header = "@relation r\n@attribute Text string\n@attribute c {0,1}\n\n@data\n\n"
    text = header + "'GRAIN \\'WHEAT\\', here\\nand now',1\n'x',0\n"
    assert sources.arff_rows(text) == [("GRAIN 'WHEAT', here\nand now", "1"), ("x", "0")]


def test_missing_assets_are_named_with_the_fix(tmp_path: Path) -> None:
    found = sources.missing(["rotten-tomatoes", "reuters-grain"], tmp_path)
    assert list(found) == ["reuters-grain"] and "make quality-assets" in found["reuters-grain"]


def _frame() -> pd.DataFrame:
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    return pd.DataFrame({"text": [f"row {i}" for i in range(100)], "label": labels})


def test_draw_is_disjoint_stratified_and_fixed_by_seed() -> None:
    train, test = samples.draw(_frame(), 50, 20, seed=3)
    assert not set(train["text"]) & set(test["text"])
    assert train["label"].value_counts().to_dict() == {"a": 30, "b": 15, "c": 5}
    again, _ = samples.draw(_frame(), 50, 20, seed=3)
    other, _ = samples.draw(_frame(), 50, 20, seed=4)
    assert list(again["text"]) == list(train["text"]) and set(other["text"]) != set(train["text"])
    with pytest.raises(samples.SampleError, match="asked for"):
        samples.draw(_frame(), 90, 20, seed=0)


def _run(recipe: str, seed: int, accuracy: float, wall: float) -> dict:
    return {"dataset": "d", "recipe": recipe, "seed": seed, "train_rows": 10, "test_rows": 5, "status": "ok",
            "accuracy": accuracy, "f1_macro": accuracy - 0.1, "wall_s": wall, "cpu": "cpu"}  # fmt: skip


def test_summary_means_standard_errors_and_paired_differences() -> None:
    document = report.new()
    document["datasets"]["d"] = {"shape": "s", "train_rows": 10, "test_rows": 5}
    for seed, (notebook, job) in enumerate([(0.70, 0.74), (0.80, 0.82), (0.75, 0.80)]):
        report.add(document, _run("notebook", seed, notebook, 100.0))
        report.add(document, _run("job", seed, job, 50.0 + seed))
    report.add(document, _run("job", 2, 0.78, 52.0))  # the same run again replaces the first
    report.add(document, {**_run("job", 0, 0.1, 1.0), "train_rows": 99})  # other rows: kept, not counted
    assert len(document["runs"]) == 7
    found = report.summary(document)["d"]
    assert found["notebook"]["accuracy"]["mean"] == pytest.approx(0.75)
    assert found["notebook"]["accuracy"]["se"] == pytest.approx(0.05 / 3**0.5)
    assert found["job_minus_notebook"]["accuracy"]["mean"] == pytest.approx((0.04 + 0.02 + 0.03) / 3)
    assert found["wall_ratio_job_to_notebook"]["mean"] == pytest.approx(0.51)
    assert found["paired_seeds"] == [0, 1, 2]
    text = report.markdown(document)
    assert "| d | s | 10 / 5 | notebook | 0.750 ± 0.029 |" in text and "| job − notebook | +0.030 ± 0.006 |" in text


def test_resume_times_both_recipes_of_a_draw_on_one_machine() -> None:
    document = report.new()
    document["machine"] = {"cpu": "cpu", "cpus_used": 1}
    draw = samples.Draw("d", 10, 5, 0)
    both = ("notebook", "job")
    assert report.to_run(document, both, draw, resume=True) == ["notebook", "job"]
    report.add(document, {**_run("notebook", 0, 0.7, 100.0), "cpus_used": 1})
    assert report.to_run(document, both, draw, resume=True) == ["job"]  # its partner ran here
    document["machine"] = {"cpu": "other cpu", "cpus_used": 1}
    assert report.to_run(document, both, draw, resume=True) == ["notebook", "job"]  # timed elsewhere: again
    report.add(document, {**_run("job", 0, 0.7, 50.0), "cpus_used": 2})
    assert report.to_run(document, both, draw, resume=True) == []  # a whole pair stands, wherever it ran
    assert report.to_run(document, both, draw, resume=False) == ["notebook", "job"]


def test_one_seed_has_no_standard_error() -> None:
    assert report.mean_se([0.5]) == {"mean": 0.5, "se": None, "n": 1}


def test_a_lever_reaches_the_job_alone_and_needs_its_own_results_file(tmp_path: Path) -> None:
    from bench.quality import __main__ as cli
    from bench.quality import runs

    with pytest.raises(SystemExit):
        cli.options(["--job-env", "FT_LONG_TEXTS=truncate"])  # would mix with the defaults' results
    with pytest.raises(SystemExit):
        cli.options(["--job-env", "LONG_TEXTS=truncate", "--output", str(tmp_path / "r.json")])
    opts = cli.options(
        ["--recipes", "job", "--job-env", "FT_LONG_TEXTS=truncate", "--output", str(tmp_path / "r.json")]
    )
    assert opts.recipes == ("job",) and dict(opts.job_env) == {"FT_LONG_TEXTS": "truncate"}
    kwargs = {
        "model": "m",
        "data": tmp_path,
        "seed": 0,
        "folder": tmp_path,
        "run_id": "r",
        "job_env": dict(opts.job_env),
    }
    _, job = runs.command("job", **kwargs)
    _, notebook = runs.command("notebook", **kwargs)
    assert job["FT_LONG_TEXTS"] == "truncate" and "FT_LONG_TEXTS" not in notebook

"""slurm/train.sh submitted with `sbatch --wait` to a real one-node Slurm cluster started
on localhost. Two srun tasks stand in for two nodes: two launchers, a rendezvous on the
first host, world size 2 over gloo; the first publishes, the second only trains."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import rows, write
from slurm_cluster import SlurmCluster, available

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
# The template asks for GPUs and 32 cores per node; this test cluster has 2 cores.
SMALL = ["--nodes=1", "--gpus-per-node=0"]

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not available(), reason="needs slurm-wlm (slurmctld, slurmd) and root; .ci/run installs them"),
]


def job_env(cluster: SlurmCluster, **variables: str) -> dict[str, str]:
    """The submitting shell: the cluster's environment without this runner's own FT_* and
    Slurm job variables (a test run inside an allocation must not leak into the job)."""
    env = {k: v for k, v in cluster.env.items() if not k.startswith(("FT_", "SLURM_JOB", "SLURM_STEP", "SRUN_"))}
    env.update(FT_LOG_FORMAT="json", HF_HUB_OFFLINE="1", **variables)
    return env


def sbatch(env: dict[str, str], workdir: Path, *options: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    submit = subprocess.run(
        ["sbatch", "--wait", *options, f"--chdir={workdir}", str(ROOT / "slurm" / "train.sh")],
        env=env, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    found = re.search(r"Submitted batch job (\d+)", submit.stdout)
    assert found, submit.stdout + submit.stderr
    return found.group(1), submit


def job_state(env: dict[str, str], job_id: str) -> str:
    return subprocess.run(
        ["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True, check=False
    ).stdout


def events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def test_sbatch_template_trains_on_two_tasks(tmp_path: Path, tiny_model: Path) -> None:
    write(tmp_path / "data" / "train.csv", rows("binary", 160))
    write(tmp_path / "data" / "test.csv", rows("binary", 20, 1))
    (tmp_path / "logs").mkdir()
    with SlurmCluster(tmp_path / "slurm") as cluster:
        env = job_env(
            cluster,
            FTJOB_VENV=str(VENV), FT_MODEL=str(tiny_model),
            FT_DATASET=str(tmp_path / "data"), FT_OUTPUT=str(tmp_path / "outputs"),
            FT_CACHE_DIR=str(tmp_path / "cache"), FT_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
            FT_PROCS_PER_NODE="1", FT_EPOCHS="2", FT_BATCH_SIZE="16",
        )  # fmt: skip
        job_id, submit = sbatch(env, tmp_path, *SMALL, "--ntasks=2", "--ntasks-per-node=2", "--cpus-per-task=1")
        assert submit.returncode == 0, submit.stdout + submit.stderr + cluster.log()
        assert "JobState=COMPLETED" in job_state(env, job_id)  # sbatch --wait also returns 0 for a cancelled job

    found = events(tmp_path / "logs" / f"ftjob-{job_id}.out")
    topologies = [e for e in found if e["event"] == "launch.topology"]
    assert sorted(e["node_rank"] for e in topologies) == [0, 1]
    # "+override": the template exports FT_MASTER_ADDR, the test FT_PROCS_PER_NODE.
    assert all(e["source"] == "slurm+override" and e["nnodes"] == 2 and e["world_size"] == 2 for e in topologies)
    assert {e["rank"] for e in found if e["event"] == "train.completed"} == {0, 1}
    assert [e["node_rank"] for e in found if e["event"] == "node.finished"] == [1]

    run = tmp_path / "outputs" / f"slurm-{job_id}"
    assert (run / "_COMPLETE.json").is_file()
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["training"]["world_size"] == 2 and len(manifest["training"]["samples_per_rank"]) == 2
    predictions = [json.loads(line) for line in (run / "test_predictions.jsonl").read_text().splitlines()]
    assert [p["index"] for p in predictions] == list(range(20))


def test_every_step_asks_srun_for_the_jobs_cpus_per_task(tmp_path: Path) -> None:
    """Since Slurm 22.05 srun ignores SLURM_CPUS_PER_TASK: the template must hand the
    allocation's --cpus-per-task to its steps as SRUN_CPUS_PER_TASK. FTJOB_VENV here is a
    stand-in whose python records what each task was started with and exits 0."""
    record = tmp_path / "steps.txt"
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(
        '#!/bin/sh\nprintf "%s %s %s\\n" "${SLURM_STEP_ID}" "${SRUN_CPUS_PER_TASK:-unset}" "$*" >> "$STEP_RECORD"\n'
    )
    python.chmod(0o755)
    (tmp_path / "logs").mkdir()
    with SlurmCluster(tmp_path / "slurm") as cluster:
        env = job_env(cluster, FTJOB_VENV=str(python.parent.parent), FTJOB_CHECK="1", STEP_RECORD=str(record))
        job_id, submit = sbatch(env, tmp_path, *SMALL, "--ntasks=1", "--cpus-per-task=2")
        assert submit.returncode == 0, submit.stdout + submit.stderr + cluster.log()
        assert "JobState=COMPLETED" in job_state(env, job_id)
    # The dry run (step 0) and the launcher (step 1), each asking for the job's 2 CPUs.
    assert record.read_text().splitlines() == ["0 2 -m job check", "1 2 -m job"]

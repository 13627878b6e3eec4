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

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not available(), reason="needs slurm-wlm (slurmctld, slurmd) and root; .ci/run installs them"),
]


def test_sbatch_template_trains_on_two_tasks(tmp_path: Path, tiny_model: Path) -> None:
    write(tmp_path / "data" / "train.csv", rows("binary", 160))
    write(tmp_path / "data" / "test.csv", rows("binary", 20, 1))
    (tmp_path / "logs").mkdir()
    with SlurmCluster(tmp_path / "slurm") as cluster:
        env = {k: v for k, v in cluster.env.items() if not k.startswith(("FT_", "SLURM_JOB", "SLURM_STEP"))}
        env.update(
            FTJOB_VENV=str(Path(sys.executable).parent.parent), FT_MODEL=str(tiny_model),
            FT_DATASET=str(tmp_path / "data"), FT_OUTPUT=str(tmp_path / "outputs"),
            FT_CACHE_DIR=str(tmp_path / "cache"), FT_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
            FT_PROCS_PER_NODE="1", FT_EPOCHS="2", FT_BATCH_SIZE="16", FT_LOG_FORMAT="json", HF_HUB_OFFLINE="1",
        )  # fmt: skip
        # The template asks for GPUs and 32 cores per node; this test cluster has 2 cores.
        submit = subprocess.run(
            ["sbatch", "--wait", "--nodes=1", "--ntasks=2", "--ntasks-per-node=2", "--cpus-per-task=1",
             "--gpus-per-node=0", f"--chdir={tmp_path}", str(ROOT / "slurm" / "train.sh")],
            env=env, capture_output=True, text=True, check=False, timeout=900,
        )  # fmt: skip
        assert submit.returncode == 0, submit.stdout + submit.stderr + cluster.log()
        job_id = re.search(r"Submitted batch job (\d+)", submit.stdout).group(1)
        state = subprocess.run(
            ["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True, check=False
        ).stdout
        assert "JobState=COMPLETED" in state  # sbatch --wait also returns 0 for a cancelled job

    log = (tmp_path / "logs" / f"ftjob-{job_id}.out").read_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    topologies = [e for e in events if e["event"] == "launch.topology"]
    assert sorted(e["node_rank"] for e in topologies) == [0, 1]
    # "+override": the template exports FT_MASTER_ADDR, the test FT_PROCS_PER_NODE.
    assert all(e["source"] == "slurm+override" and e["nnodes"] == 2 and e["world_size"] == 2 for e in topologies)
    assert {e["rank"] for e in events if e["event"] == "train.completed"} == {0, 1}
    assert [e["node_rank"] for e in events if e["event"] == "node.finished"] == [1]

    run = tmp_path / "outputs" / f"slurm-{job_id}"
    assert (run / "_COMPLETE.json").is_file()
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["training"]["world_size"] == 2 and len(manifest["training"]["samples_per_rank"]) == 2
    predictions = [json.loads(line) for line in (run / "test_predictions.jsonl").read_text().splitlines()]
    assert [p["index"] for p in predictions] == list(range(20))

"""slurm/train.sh submitted with `sbatch --wait` to a real one-node Slurm cluster started
on localhost. Two srun tasks stand in for two nodes: two launchers, a rendezvous on the
first host, world size 2 over gloo; the first publishes, the second only trains. A
preempted job is requeued by the script and resumes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import rows, write
from slurm_cluster import SlurmCluster, available

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
PYXIS = ROOT / "tests" / "pyxis_srun"  # first on PATH: srun with pyxis' options (tests/pyxis_standin.py)
# The template asks for GPUs and 32 cores per node; this test cluster has 2 cores.
SMALL = ["--nodes=1", "--gpus-per-node=0"]

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not available(), reason="needs slurm-wlm (slurmctld, slurmd) and root; .ci/run installs them"),
]


def mount_namespaces() -> bool:
    """The pyxis stand-in builds each container in a mount namespace of its own."""
    probe = ["unshare", "--mount", "--propagation", "private", "true"]
    return bool(shutil.which("unshare")) and subprocess.run(probe, capture_output=True, check=False).returncode == 0


needs_mount_namespaces = pytest.mark.skipif(
    not available() or not mount_namespaces(), reason="the pyxis stand-in needs mount namespaces (unshare --mount)"
)


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


def events(log: Path) -> list[dict[str, Any]]:
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


def test_a_preempted_job_is_requeued_resumes_and_keeps_one_log(tmp_path: Path, tiny_model: Path) -> None:
    """SIGTERM to the batch shell (what the time-limit warning and preemption send): the job
    saves a checkpoint and exits 75, the script requeues it, the second attempt resumes the
    same run id and publishes. The log holds both attempts (--open-mode=append)."""
    write(tmp_path / "data" / "train.jsonl", rows("binary", 1600, seed=1))  # hundreds of steps
    write(tmp_path / "data" / "validation.jsonl", rows("binary", 100, seed=2))
    (tmp_path / "logs").mkdir()
    with SlurmCluster(tmp_path / "slurm") as cluster:
        env = job_env(
            cluster,
            FTJOB_VENV=str(VENV), FT_MODEL=str(tiny_model), FT_DATASET=str(tmp_path / "data"),
            FT_OUTPUT=str(tmp_path / "outputs"), FT_CACHE_DIR=str(tmp_path / "cache"),
            FT_CHECKPOINT_DIR=str(tmp_path / "checkpoints"), FT_EPOCHS="1", FT_BATCH_SIZE="8",
            FT_LEARNING_RATE="3e-3", FT_LOGGING_STEPS="1", FT_SAVE_STEPS="10",
        )  # fmt: skip
        command = ["sbatch", "--wait", *SMALL, "--ntasks=1", "--cpus-per-task=2", f"--chdir={tmp_path}"]
        waiting = subprocess.Popen(
            [*command, str(ROOT / "slurm" / "train.sh")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            job_id = poll(lambda: running_job(env), what="the job to start")
            log = tmp_path / "logs" / f"ftjob-{job_id}.out"
            poll(lambda: log.is_file() and any(e["event"] == "train.progress" for e in events(log)), what="training")
            subprocess.run(["scancel", "--signal=TERM", "--batch", job_id], env=env, check=True)
            # Slurm holds a requeued job back for two minutes (BeginTime); an operator's nudge,
            # after the second in which slurmd revoked the first attempt's credential (a start
            # within it is refused: "Job credential revoked").
            poll(lambda: "Restarts=1" in (state := job_state(env, job_id)) and "JobState=PENDING" in state,
                 what="the requeue")  # fmt: skip
            time.sleep(2)
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env, check=True)
            stdout, stderr = waiting.communicate(timeout=600)
        finally:
            if waiting.poll() is None:
                waiting.kill()
        assert waiting.returncode == 0, stdout + stderr + cluster.log()
        state = job_state(env, job_id)
        assert "JobState=COMPLETED" in state and "Restarts=1" in state, state

    text = log.read_text()
    assert f"stopped with a checkpoint; requeueing job {job_id}" in text
    found = events(log)
    names = [e["event"] for e in found]
    # The first attempt's lines are still there, before the second attempt's.
    assert names.count("run.started") == 2 and names.index("run.preempted") < names.index("train.resumed")
    first = found[: names.index("run.preempted")]
    saved = [e["step"] for e in first if e["event"] == "checkpoint.saved"]
    assert saved and found[names.index("train.resumed")]["step"] == saved[-1]
    assert names[-1] == "run.completed"
    assert (tmp_path / "outputs" / f"slurm-{job_id}" / "_COMPLETE.json").is_file()


def standin_image(folder: Path) -> Path:
    """The image for the pyxis stand-in: docker/Dockerfile's runtime stage (its ENV,
    WORKDIR, VOLUME) with this test run's Python and virtualenv as its files (/opt/ftjob)."""
    folder.mkdir(parents=True, exist_ok=True)
    own = [str(VENV), str(ROOT / "job"), sys.base_prefix]  # the venv's interpreter, the editable install
    files = {"/opt/ftjob": str(VENV), **{path: path for path in own}}
    image = folder / "ftjob.standin.json"
    image.write_text(
        json.dumps({"dockerfile": str(ROOT / "docker" / "Dockerfile"), "stage": "runtime", "files": files})
    )
    return image


@needs_mount_namespaces
def test_the_pyxis_standin_applies_pyxis_rules(tmp_path: Path) -> None:
    """tests/pyxis_standin.py, on its own: the image's variables win over the job's unless
    named in --container-env, only mounted host paths are there, writes elsewhere vanish."""
    image, kept, data = standin_image(tmp_path / "image"), tmp_path / "kept", tmp_path / "data"
    kept.mkdir()
    data.mkdir()
    script = tmp_path / "steps.sh"
    script.write_text(f"""#!/bin/bash
srun printenv FT_OUTPUT
srun --container-image={image} \\
    sh -c 'echo "image $FT_OUTPUT $FT_EPOCHS $PWD"; ls {kept} || echo hidden; echo x > /outputs/x'
srun --container-image={image} --container-env=FT_OUTPUT --container-mounts={kept}:{kept},{data}:/data:ro \\
    sh -c 'echo "host $FT_OUTPUT"; echo model > "$FT_OUTPUT/model"; touch /data/x 2>/dev/null || echo read-only'
srun --container-image={image} --container-mounts={tmp_path}/missing:/missing true || echo refused
""")  # fmt: skip
    outputs_existed = Path("/outputs").exists()
    with SlurmCluster(tmp_path / "slurm") as cluster:
        env = job_env(cluster, PATH=f"{PYXIS}:{cluster.env['PATH']}", FT_OUTPUT=str(kept), FT_EPOCHS="7")
        done = subprocess.run(
            ["sbatch", "--wait", "--ntasks=1", f"--output={tmp_path}/steps.out", str(script)],
            env=env, capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr + cluster.log()
    lines = [
        line for line in (tmp_path / "steps.out").read_text().splitlines() if not line.startswith(("srun:", "ls:"))
    ]
    missing = f"pyxis stand-in: --container-mounts source {tmp_path}/missing does not exist"
    assert lines == [
        str(kept),
        "image /outputs 7 /home/ftjob",
        "hidden",
        f"host {kept}",
        "read-only",
        missing,
        "refused",
    ]
    assert (kept / "model").read_text() == "model\n" and not list(data.iterdir())
    assert Path("/outputs").exists() == outputs_existed  # the container's own filesystem, not the host's


@needs_mount_namespaces
def test_container_mode_passes_every_setting_and_keeps_what_the_job_writes(tmp_path: Path, tiny_model: Path) -> None:
    """FTJOB_IMAGE: the dry run and the launcher run in the image through pyxis (the
    stand-in). The image sets FT_OUTPUT=/outputs and FT_CACHE_DIR=/cache/ftjob; the job's
    own values must win and their folders be mounted, or the model stays in the container.
    FT_OUTPUT and FT_DATASET are relative: the container starts elsewhere (its WORKDIR)."""
    write(tmp_path / "data" / "train.csv", rows("binary", 120))
    (tmp_path / "logs").mkdir()
    outputs_existed = Path("/outputs").exists()
    with SlurmCluster(tmp_path / "slurm") as cluster:
        env = job_env(
            cluster,
            PATH=f"{PYXIS}:{cluster.env['PATH']}", FTJOB_IMAGE=str(standin_image(tmp_path / "image")),
            FTJOB_CHECK="1", FT_MODEL=str(tiny_model), FT_DATASET="data", FT_OUTPUT="outputs",
            FT_CACHE_DIR=str(tmp_path / "cache"), FT_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
            FT_EPOCHS="1", FT_BATCH_SIZE="16",
        )  # fmt: skip
        job_id, submit = sbatch(env, tmp_path, *SMALL, "--ntasks=1", "--cpus-per-task=2")
        assert submit.returncode == 0, submit.stdout + submit.stderr + cluster.log()
        assert "JobState=COMPLETED" in job_state(env, job_id)

    log = tmp_path / "logs" / f"ftjob-{job_id}.out"
    found = events(log)
    names = [e["event"] for e in found]
    assert "check.passed" in names, log.read_text()[-3000:]
    run = tmp_path / "outputs" / f"slurm-{job_id}"
    assert found[-1]["event"] == "run.completed" and found[-1]["location"] == str(run)
    assert (run / "_COMPLETE.json").is_file()
    assert (tmp_path / "cache" / "prepared").is_dir()  # FT_CACHE_DIR, not the image's /cache/ftjob
    assert Path("/outputs").exists() == outputs_existed


def running_job(env: dict[str, str]) -> str | None:
    listed = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-o", "%i"], env=env, capture_output=True, text=True, check=False
    ).stdout.split()
    return listed[0] if listed else None


def poll(check: Any, *, what: str, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")

"""Topology discovery from each scheduler's variables, and the settings hand-off to workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from job.errors import ConfigError
from job.settings import Settings, as_environment
from job.topology import DEFAULT_PORT, discover


def settings(**values) -> Settings:
    return Settings(_env_file=None, model="m", dataset="d", **values)  # type: ignore[call-arg]


def test_no_scheduler_is_one_node_with_a_process_per_gpu() -> None:
    topo = discover(settings(), environ={}, gpus=4)
    assert (topo.source, topo.nnodes, topo.node_rank, topo.procs_per_node, topo.world_size) == (
        "single-node",
        1,
        0,
        4,
        4,
    )
    assert discover(settings(), environ={}, gpus=0).world_size == 1  # CPU: one process


def test_slurm_single_task() -> None:
    env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
    topo = discover(settings(), environ=env, gpus=8)
    assert (topo.source, topo.nnodes, topo.procs_per_node, topo.master_port) == ("slurm", 1, 8, DEFAULT_PORT + 242)


def test_slurm_batch_step_without_srun_is_not_a_task() -> None:
    env = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "4"}  # no SLURM_STEP_ID: the batch script
    assert discover(settings(), environ=env, gpus=1).source == "single-node"


def test_kubernetes_indexed_job() -> None:
    env = {"JOB_COMPLETION_INDEX": "3", "HOSTNAME": "ftjob-train-3", "POD_NAMESPACE": "ml"}
    topo = discover(settings(num_nodes=4, k8s_service="ftjob-workers"), environ=env, gpus=2)
    assert (topo.nnodes, topo.node_rank, topo.world_size, topo.first_rank) == (4, 3, 8, 6)
    assert topo.master_addr == "ftjob-train-0.ftjob-workers.ml.svc"
    assert topo.source == "kubernetes-indexed-job+override"


def test_kubeflow_trainjob_resolves_auto_and_elastic_ranges() -> None:
    env = {"PET_NNODES": "1:2", "PET_NODE_RANK": "1", "PET_NPROC_PER_NODE": "auto", "PET_MASTER_ADDR": "job-node-0-0",
           "PET_MASTER_PORT": "23456"}  # fmt: skip
    topo = discover(settings(), environ=env, gpus=4)
    assert (topo.source, topo.nnodes, topo.node_rank, topo.procs_per_node) == ("kubeflow", 2, 1, 4)
    assert (topo.master_addr, topo.master_port) == ("job-node-0-0", 23456)


def test_kubeflow_pytorchjob_counts_pods() -> None:
    env = {"MASTER_ADDR": "pt-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "3", "RANK": "2"}
    topo = discover(settings(), environ=env, gpus=1)
    assert (topo.source, topo.nnodes, topo.node_rank, topo.master_addr) == ("kubeflow", 3, 2, "pt-master-0")


def test_a_torchrun_worker_is_not_mistaken_for_a_launcher() -> None:
    env = {"MASTER_ADDR": "x", "WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1"}
    assert discover(settings(), environ=env, gpus=1).source == "single-node"


def test_torchrun_style_variables() -> None:
    env = {"NNODES": "2", "NODE_RANK": "0", "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29400", "NPROC_PER_NODE": "gpu"}
    topo = discover(settings(), environ=env, gpus=2)
    assert (topo.source, topo.world_size, topo.master_addr, topo.master_port) == ("torchrun", 4, "10.0.0.5", 29400)


def test_overrides_win() -> None:
    env = {"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "a"}
    topo = discover(settings(master_addr="b", master_port=1234, procs_per_node=3), environ=env, gpus=8)
    assert (topo.master_addr, topo.master_port, topo.procs_per_node, topo.node_rank) == ("b", 1234, 3, 1)


def test_rank_outside_the_node_count_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"node rank 5 is outside 0\.\.3 \(torchrun\)"):
        discover(settings(), environ={"NNODES": "4", "NODE_RANK": "5", "MASTER_ADDR": "a"}, gpus=1)
    with pytest.raises(ConfigError, match="FT_NUM_NODES > 1 needs FT_MASTER_ADDR"):
        discover(settings(num_nodes=2), environ={}, gpus=1)


def test_settings_survive_the_hand_off_to_workers(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    original = settings(
        labels=["b", "a"], data_files={"train": "x*.csv", "validation": "y.csv"}, max_length=128, hf_token="hf_secret",
        trust_remote_code=True, cache_dir=tmp_path, eval_split=None, learning_rate=3e-5,
    )  # fmt: skip
    env = as_environment(original)
    assert "HF_TOKEN" not in env and "hf_secret" not in str(env)  # workers get no secrets
    for key, value in env.items():
        clean_env.setenv(key, value)
    rebuilt = Settings(_env_file=None)  # type: ignore[call-arg]
    assert rebuilt.model_dump(exclude={"hf_token"}) == original.model_dump(exclude={"hf_token"})


def test_a_process_started_by_torchrun_is_a_rank_of_its_launch() -> None:
    env = {
        "RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1",
        "MASTER_ADDR": "node0", "MASTER_PORT": "29400", "TORCHELASTIC_RUN_ID": "abc",
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }  # fmt: skip
    topo = discover(settings(procs_per_node=2), environ=env, gpus=4)
    assert (topo.source, topo.nnodes, topo.node_rank, topo.procs_per_node, topo.world_size) == (
        "outer-launch", 2, 1, 4, 8,
    )  # fmt: skip
    assert topo.outer is not None and (topo.outer.rank, topo.outer.local_rank, topo.outer.run_id) == (5, 1, "abc")
    assert discover(settings(), environ={k: v for k, v in env.items() if k != "LOCAL_RANK"}, gpus=4).outer is None
    del env["TORCHELASTIC_USE_AGENT_STORE"]
    with pytest.raises(ConfigError, match=r"^RANK, LOCAL_RANK and WORLD_SIZE are set but no elastic agent"):
        discover(settings(), environ=env, gpus=4)

"""Where this process sits in the cluster: nodes, this node's rank, processes per node,
and the rendezvous address, read from the scheduler's environment.

One launcher runs per node (per srun task on SLURM, per pod on Kubernetes); it
starts one training process per GPU. Sources, first match wins, and any FT_
override beats what a source says:

1. SLURM srun task: SLURM_NTASKS / SLURM_PROCID (one task per node in the
   template), rendezvous on the first host of `scontrol show hostnames`.
2. Kubernetes Indexed Job: JOB_COMPLETION_INDEX, FT_NUM_NODES, and rank 0 at
   `<job name>-0.<FT_K8S_SERVICE>` (the headless Service).
3. Kubeflow PyTorchJob / TrainJob: PET_NNODES, PET_NODE_RANK, PET_NPROC_PER_NODE
   (`auto`, `gpu`, `cpu` or a number), PET_MASTER_ADDR/PORT; or the classic
   MASTER_ADDR, MASTER_PORT, WORLD_SIZE (pods) and RANK (this pod).
4. torchrun-style: NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT.

Started by torchrun or `accelerate launch` instead (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT set: see `outer_launch`), the processes already are the workers:
the node's local rank 0 does the launcher's part, and every process trains as its rank.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from job.errors import ConfigError
from job.settings import Settings

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class OuterLaunch:
    """This process is one rank of a launch torchrun (or accelerate launch) made."""

    rank: int
    local_rank: int
    run_id: str  # the launch's (TORCHELASTIC_RUN_ID), shared by its processes


@dataclass(frozen=True)
class Topology:
    source: str
    nnodes: int
    node_rank: int
    procs_per_node: int
    master_addr: str
    master_port: int
    outer: OuterLaunch | None = None  # None: this process is the node's launcher and starts the workers

    @property
    def world_size(self) -> int:
        return self.nnodes * self.procs_per_node

    @property
    def is_main_node(self) -> bool:
        return self.node_rank == 0

    @property
    def first_rank(self) -> int:
        return self.node_rank * self.procs_per_node


_OUTER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def outer_launch(environ: Mapping[str, str]) -> Topology | None:
    """The topology of a launch that started this process as one of its ranks (what an
    elastic agent sets: torchrun, accelerate launch), or None when nothing did."""
    if not all(environ.get(name) for name in _OUTER_VARIABLES):
        return None
    if environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        # The ranks meet in the agent's store (launch.handoff); without an agent there is none.
        raise ConfigError(
            "RANK, LOCAL_RANK and WORLD_SIZE are set but no elastic agent started this process "
            "(TORCHELASTIC_USE_AGENT_STORE is not True); start the job with torchrun or accelerate launch, "
            "or unset those variables and let the job start its workers"
        )
    rank, local_rank, world = int(environ["RANK"]), int(environ["LOCAL_RANK"]), int(environ["WORLD_SIZE"])
    local_world = int(environ.get("LOCAL_WORLD_SIZE") or world)
    node_rank = int(environ.get("GROUP_RANK") or rank // local_world)
    return Topology(
        "outer-launch",
        nnodes=max(world // local_world, 1),
        node_rank=node_rank,
        procs_per_node=local_world,
        master_addr=environ["MASTER_ADDR"],
        master_port=int(environ["MASTER_PORT"]),
        outer=OuterLaunch(rank, local_rank, environ.get("TORCHELASTIC_RUN_ID") or "none"),
    )


def discover(settings: Settings, environ: Mapping[str, str] | None = None, gpus: int | None = None) -> Topology:
    env = dict(os.environ if environ is None else environ)
    outer = outer_launch(env)
    if outer is not None:  # the launch decided the ranks: FT_ topology settings have nothing left to say
        return outer
    gpus = _visible_gpus() if gpus is None else gpus
    source, found = _from_scheduler(env, settings, gpus)
    nnodes = settings.num_nodes or found.get("nnodes", 1)
    node_rank = settings.node_rank if settings.node_rank is not None else found.get("node_rank", 0)
    procs = settings.procs_per_node or found.get("procs") or max(gpus, 1)
    addr = settings.master_addr or found.get("addr") or "127.0.0.1"
    port = settings.master_port or found.get("port") or DEFAULT_PORT
    if settings.num_nodes or settings.node_rank is not None or settings.master_addr or settings.procs_per_node:
        source += "+override"
    if not 0 <= node_rank < nnodes:
        raise ConfigError(
            f"node rank {node_rank} is outside 0..{nnodes - 1} ({source}); "
            "set FT_NODE_RANK and FT_NUM_NODES consistently"
        )
    if nnodes > 1 and addr in ("127.0.0.1", "localhost") and source == "single-node+override":
        raise ConfigError("FT_NUM_NODES > 1 needs FT_MASTER_ADDR: the address of the node with rank 0")
    return Topology(source, nnodes, node_rank, procs, addr, int(port))


def _from_scheduler(env: dict[str, str], settings: Settings, gpus: int) -> tuple[str, dict[str, object]]:
    if "SLURM_JOB_ID" in env and "SLURM_STEP_ID" in env and "SLURM_PROCID" in env:
        tasks = int(env.get("SLURM_NTASKS") or env.get("SLURM_NNODES") or 1)
        found: dict[str, object] = {"nnodes": tasks, "node_rank": int(env["SLURM_PROCID"])}
        if tasks > 1:
            found["addr"] = _first_slurm_host(env)
        # Concurrent jobs sharing nodes must not share a port.
        found["port"] = DEFAULT_PORT + int(env["SLURM_JOB_ID"]) % 1000
        return "slurm", found
    if "JOB_COMPLETION_INDEX" in env:
        found = {"node_rank": int(env["JOB_COMPLETION_INDEX"])}
        if settings.k8s_service:
            job = env.get("HOSTNAME", socket.gethostname()).rsplit("-", 1)[0]
            namespace = env.get("POD_NAMESPACE")
            found["addr"] = f"{job}-0.{settings.k8s_service}" + (f".{namespace}.svc" if namespace else "")
        return "kubernetes-indexed-job", found
    if "PET_NNODES" in env or "PET_NODE_RANK" in env:
        found = {"nnodes": _max_of_range(env.get("PET_NNODES", "1")), "node_rank": int(env.get("PET_NODE_RANK", "0"))}
        found["procs"] = _procs(env.get("PET_NPROC_PER_NODE", "auto"), gpus)
        found["addr"] = env.get("PET_MASTER_ADDR") or env.get("MASTER_ADDR")
        found["port"] = int(env.get("PET_MASTER_PORT") or env.get("MASTER_PORT") or DEFAULT_PORT)
        return "kubeflow", found
    if "MASTER_ADDR" in env and "WORLD_SIZE" in env and "RANK" in env and "LOCAL_RANK" not in env:
        # Kubeflow PyTorchJob: one pod per node, WORLD_SIZE counts pods. (With
        # LOCAL_RANK set, this is a worker already started by torchrun: not a launcher.)
        found = {"nnodes": int(env["WORLD_SIZE"]), "node_rank": int(env["RANK"]), "addr": env["MASTER_ADDR"]}
        found["port"] = int(env.get("MASTER_PORT") or DEFAULT_PORT)
        return "kubeflow", found
    if "NNODES" in env and "NODE_RANK" in env:
        found = {"nnodes": int(env["NNODES"]), "node_rank": int(env["NODE_RANK"]), "addr": env.get("MASTER_ADDR")}
        found["port"] = int(env.get("MASTER_PORT") or DEFAULT_PORT)
        if env.get("NPROC_PER_NODE"):
            found["procs"] = _procs(env["NPROC_PER_NODE"], gpus)
        return "torchrun", found
    return "single-node", {}


def _procs(value: str, gpus: int) -> int:
    value = value.strip().lower()
    if value in ("auto", "gpu"):
        return max(gpus, 1)
    if value == "cpu":
        return 1
    return int(value)


def _max_of_range(value: str) -> int:
    """PET_NNODES may be an elastic range `min:max`; a static rendezvous needs the max."""
    return int(value.rsplit(":", maxsplit=1)[-1])


def _first_slurm_host(env: dict[str, str]) -> str:
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(
            f"cannot expand SLURM_JOB_NODELIST='{nodelist}' with scontrol ({exc}); set FT_MASTER_ADDR"
        ) from None
    hosts = out.split()
    if not hosts:
        raise ConfigError(f"SLURM_JOB_NODELIST='{nodelist}' expands to no host; set FT_MASTER_ADDR")
    return hosts[0]


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0

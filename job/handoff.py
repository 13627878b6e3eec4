"""How the ranks of a launch that torchrun (or accelerate launch) made meet: the node's local
rank 0 does the launcher's part (settings, inputs, resume) and posts the training task in the
elastic agent's key-value store; the node's other ranks wait for it there, then train.

The agent's store is the one the ranks' process group is built on, so it is there from the
start and goes with the launch. A rank that fails ends the launch: the agent stops the
others, so a rank waiting here never waits on one that is gone.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from typing import Any

from job.topology import Topology

_POLL_S = 0.5


def post(topology: Topology, task: dict[str, Any]) -> None:
    """The node's training task, for its other ranks (local rank 0 only)."""
    _store(topology).set(_key(topology), json.dumps(task))


def release(topology: Topology) -> None:
    """Nothing to train (the run ended before training: done already, or failed): the waiting
    ranks end too. A no-op once the task was posted."""
    store = _store(topology)
    if not store.check([_key(topology)]):
        store.set(_key(topology), json.dumps({"train": False}))


def wait(topology: Topology) -> dict[str, Any]:
    """The task local rank 0 posts, however long preparing the inputs takes."""
    store = _store(topology)
    while not store.check([_key(topology)]):
        time.sleep(_POLL_S)
    return json.loads(store.get(_key(topology)))


def _key(topology: Topology) -> str:
    assert topology.outer is not None
    # One key per launch, per restart of it and per node: a restarted launch starts over.
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return f"ftjob/{topology.outer.run_id}/{restart}/node-{topology.node_rank}/task"


def _store(topology: Topology) -> Any:
    from torch.distributed import TCPStore

    timeout = timedelta(minutes=5)  # per request; waiting for the task polls instead
    return TCPStore(topology.master_addr, topology.master_port, is_master=False, timeout=timeout)

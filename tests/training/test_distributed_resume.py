"""Two torchrun processes (gloo on CPU): each rank draws its own random numbers, and a run
resumed in the middle of an epoch ends with exactly the weights of an uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chexviz.models.serialization import read_extra
from chexviz.training.checkpoint import LAST_NAME
from chexviz.training.distributed import DistributedContext, gather_objects, main_process_first

SCRIPT = Path(__file__).parent / "scripts" / "ddp_resume.py"


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ddp-resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    src = str(Path(__file__).parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT"):
        env.pop(name, None)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*torchrun, str(SCRIPT), str(folder)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def test_ranks_draw_different_random_numbers(out: Path) -> None:
    draws = [json.loads((out / f"draws-rank{r}.json").read_text()) for r in (0, 1)]
    assert len(draws[0]) == len(draws[1]) == 12
    assert draws[0] != draws[1]  # seeded alike, every rank would flip (and drop out) alike


def test_every_rank_resumes_exactly(out: Path) -> None:
    for rank in (0, 1):
        full = load_file(out / "full" / f"final-rank{rank}.safetensors")
        resumed = load_file(out / "part" / f"final-rank{rank}.safetensors")
        for key in full:
            assert torch.equal(full[key], resumed[key]), (rank, key)
    rank0 = load_file(out / "full" / "final-rank0.safetensors")
    rank1 = load_file(out / "full" / "final-rank1.safetensors")
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0)


def test_the_checkpoint_holds_each_ranks_generators(out: Path) -> None:
    tensors, metadata = read_extra(out / "full" / LAST_NAME)
    assert {"rng/torch", "rng/rank1/torch"} <= tensors.keys()
    assert not torch.equal(tensors["rng/torch"], tensors["rng/rank1/torch"])
    state = json.loads(metadata["training_state"])
    assert set(state["rng"]["ranks"]) == {"1"}


def test_single_process_helpers() -> None:
    context = DistributedContext()
    assert gather_objects({"a": 1}, context) == [{"a": 1}]
    ran = []
    with main_process_first(context):
        ran.append(True)
    assert ran == [True]

"""The study script under torchrun (two CPU processes, gloo): rank 0 generates the data and
builds the image cache while rank 1 waits, both train, and rank 0 alone writes the outputs.

That the other ranks really wait for rank 0 (``main_process_first``) is checked with two
processes by the GPU check's DDP part (tests/test_gpu_check.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "reproduce_study.py"


def test_reproduce_study_under_torchrun(tmp_path: Path) -> None:
    out = tmp_path / "study"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT"):
        env.pop(name, None)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    arguments = ["--synthetic", "--train", "24", "--val", "8", "--test", "12", "--epochs", "1"]
    arguments += ["--image-size", "64", "--batch-size", "8", "--models", "simple_cnn"]
    arguments += ["--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    done = subprocess.run(
        [*torchrun, str(SCRIPT), *arguments],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Only rank 0 prints and logs progress (rank 1 logs warnings only).
    assert done.stdout.count("5-label AUROC") == 1  # one table header
    assert done.stdout.count("outputs in") == 1
    assert done.stderr.count("building image cache") == 1
    table = pd.read_csv(out / "comparison.csv", index_col="model")
    assert list(table.index) == ["simple_cnn"]
    assert table["accuracy @0.5 (%)"].between(0, 100).all()
    assert (out / "simple_cnn.safetensors").is_file()
    assert len(list(out.glob("gradcam_*.png"))) == 1
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert len(list((out / "synthetic-data").rglob("train.csv"))) == 1

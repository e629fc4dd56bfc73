"""``make gpu-check`` at toy size on the CPU: the script's seven checks run and pass, so the
GPU check cannot rot between the rare sessions that have a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _run(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_gpu_check_at_toy_size_on_cpu(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    done = _run(
        "--device",
        "cpu",
        "--toy",
        "--out",
        str(tmp_path / "work"),
        "--report",
        str(report),
        cwd=tmp_path,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    results = json.loads(report.read_text())
    assert not results["failed"]
    statuses = {row["check"].split()[0]: row["status"] for row in results["rows"]}
    assert sorted(statuses) == ["1", "2", "3", "4", "5", "6", "7"]
    rows = {row["check"]: row for row in results["rows"]}
    assert rows["1 train+reload simple_cnn"]["status"] == "pass"
    assert "best reloads identical True" in rows["1 train+reload simple_cnn"]["detail"]
    assert [
        rows[f"2 Grad-CAM cpu vs cpu, {layer} layer"]["status"]
        for layer in ("default", "earlier", "fused")
    ] == ["pass"] * 3
    ddp = rows["5 DDP under torchrun, 2 ranks"]
    assert ddp["status"] == "pass"
    assert "identical weights True; rank 0 first True; Grad-CAM of DDP model True" in ddp["result"]
    assert rows["6 compile (CPU: Trainer ignores compile=True)"]["status"] == "pass"
    figures = results["backbones"]["simple_cnn"]
    assert figures["trainer_images_per_s"] > 0
    assert figures["inference_images_per_s"] > 0
    assert {"cache/0", "lazy/0"} <= results["data"].keys()
    assert results["estimate_minutes"] > 0
    assert "| check | status | result | detail |" in done.stdout
    assert "all checks passed" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_without_cuda_it_says_how_to_run_it(tmp_path: Path) -> None:
    done = _run("--device", "cuda", cwd=tmp_path)
    assert done.returncode == 2
    assert "no CUDA device here; use --device cpu --toy" in done.stderr

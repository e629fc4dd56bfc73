"""How long the command line takes to answer ``--help`` and ``--version``, beside ``import torch``.

Each command runs in a fresh Python process (``python -m chexviz.cli ...``, what the
``chexviz`` console script runs), timed from start to exit: ``--help``, ``--version`` and each
subcommand's ``--help``, beside ``python -c "import torch"`` (what every one of them cost when
the parser imported torch) and ``python -c "pass"`` (the interpreter alone). The commands run
round-robin, ``--rounds`` times each (the first round only warms the file cache and is not
counted); the table gives medians and each median's ratio to ``import torch``. The goal is at
most 0.2.

Run with ``OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python benchmarks/bench_cli_startup.py``
(with ``PYTHONPATH=src`` from a checkout that is not installed).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

GOAL = 0.2

COMMANDS: dict[str, list[str]] = {
    'python -c "pass"': ["-c", "pass"],
    'python -c "import torch"': ["-c", "import torch"],
    "chexviz --help": ["-m", "chexviz.cli", "--help"],
    "chexviz --version": ["-m", "chexviz.cli", "--version"],
    **{
        f"chexviz {name} --help": ["-m", "chexviz.cli", name, "--help"]
        for name in ("demo", "train", "evaluate", "explain", "localize")
    },
}


def _seconds(arguments: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, *arguments], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def measure(rounds: int) -> dict[str, float]:
    """Median seconds of each command over ``rounds`` round-robin rounds after a warm-up."""
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for round_number in range(rounds + 1):
        for name, arguments in COMMANDS.items():
            seconds = _seconds(arguments)
            if round_number:  # round 0 warms the file cache
                times[name].append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (medians)")
    args = parser.parse_args()
    medians = measure(args.rounds)
    torch_seconds = medians['python -c "import torch"']
    print(
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
        f"medians of {args.rounds} rounds\n"
    )
    print("| command | median (s) | ratio to import torch |")
    print("| --- | ---: | ---: |")
    for name, seconds in medians.items():
        print(f"| `{name}` | {seconds:.3f} | {seconds / torch_seconds:.2f} |")
    worst = max(seconds for name, seconds in medians.items() if name.startswith("chexviz"))
    ratio = worst / torch_seconds
    verdict = "met" if ratio <= GOAL else "missed"
    print(f"\nslowest chexviz command: {ratio:.2f}x import torch (goal {GOAL}x: {verdict})")


if __name__ == "__main__":
    main()

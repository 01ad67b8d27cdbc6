"""benchmarks/gpu_check.py in its small CPU form: every comparison runs and passes, a real
mismatch is reported as a failure, and the timings come out as numbers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


gpu_check = _load_script()


def test_small_check_on_cpu_compares_everything_and_times_three_things(one_thread, capsys) -> None:
    assert gpu_check.main(["--device", "cpu", "--small"]) == 0
    lines = capsys.readouterr().out.splitlines()
    compared = [line for line in lines if line.startswith("ok ")]
    timed = [line for line in lines if line.startswith("time ")]
    assert not [line for line in lines if line.startswith("FAIL")]
    # 3 losses, 2 evaluator directions, CNN features, 2 networks × (losses, val R-sum)
    assert len(compared) == 10
    assert [line.split()[1] for line in timed] == ["embedding", "evaluation,", "CNN"]
    assert all(any(ch.isdigit() for ch in line.split("  ")[-1]) for line in timed)


def test_a_mismatch_beyond_tolerance_fails() -> None:
    close = gpu_check._compare("x", torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0001]), 1e-3)
    far = gpu_check._compare("x", torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.1]), 1e-3)
    assert close.passed and not far.passed
    assert "4.76e-02" in far.result

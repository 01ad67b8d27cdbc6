"""The numpy text branch that text queries run: equal to the torch branch in evaluation mode
(BatchNorm on its running statistics, dropout off, the output normalized), saved and loaded
as plain arrays."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.branch import Branch
from models.branch_arrays import BranchArrays


def _trained_branch(normalize: bool = True) -> Branch:
    """A branch whose BatchNorm has learned non-trivial statistics and affine terms."""
    torch.manual_seed(0)
    branch = Branch(40, hidden_dim=64, out_dim=16, dropout=0.5, normalize=normalize)
    optimizer = torch.optim.SGD(branch.parameters(), lr=0.1)
    target = torch.randn(16)
    for _ in range(5):  # training steps move the running mean/variance and the BN affine
        batch = torch.randn(32, 40) * 3 + 1
        loss = -(branch(batch) * target).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return branch.eval()


@pytest.mark.parametrize("normalize", [True, False])
def test_numpy_branch_equals_torch_in_eval_mode(normalize: bool) -> None:
    branch = _trained_branch(normalize)
    assert not torch.allclose(branch.bn.running_var, torch.ones(64))  # precondition
    assert not torch.allclose(branch.bn.weight, torch.ones(64))
    features = torch.randn(50, 40) * 2
    with torch.no_grad():
        expected = branch(features).numpy()
    got = branch.to_arrays().forward(features.numpy())
    assert got.dtype == np.float32 and got.shape == (50, 16)
    # Unit rows agree to 1e-5 absolutely; unnormalized rows, whose size training let grow,
    # to 1e-5 relative to it.
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0 if normalize else 1e-5)
    norms = np.linalg.norm(got, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) == normalize


def test_saved_arrays_load_and_answer_the_same(tmp_path: Path) -> None:
    branch = _trained_branch()
    arrays = branch.to_arrays()
    arrays.save(tmp_path / "branch.npz")
    loaded = BranchArrays.load(tmp_path / "branch.npz")
    rows = np.random.default_rng(1).standard_normal((3, 40)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(rows), arrays.forward(rows))
    assert loaded.in_dim == 40 and loaded.out_dim == 16
    with pytest.raises(ValueError, match="takes rows of 40 features"):
        loaded.forward(rows[:, :10])
    (tmp_path / "other.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="other.npz: not a saved branch"):
        BranchArrays.load(tmp_path / "other.npz")


def test_the_numpy_branch_loads_without_torch(tmp_path: Path) -> None:
    _trained_branch().to_arrays().save(tmp_path / "branch.npz")
    script = (
        "import sys, numpy as np\n"
        "from models.branch_arrays import BranchArrays\n"
        f"out = BranchArrays.load({str(tmp_path / 'branch.npz')!r}).forward(np.ones((1, 40)))\n"
        "print(out.shape, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, 16) False"

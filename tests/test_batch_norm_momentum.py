"""The BatchNorm momentum setting: from the training config into every BatchNorm of the
networks, kept by the global-batch replacements of a distributed run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ops.training.config import TrainConfig
from ops.training.distributed import GlobalBatchNorm1d, convert_batch_norm
from ops.training.trained_model import build_model


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("network", ["embedding", "similarity"])
def test_default_is_pytorchs_and_the_setting_reaches_every_batch_norm(network):
    default = build_model(TrainConfig(network=network, hidden_dim=8, embed_dim=4), 6, 5)
    assert {m.momentum for m in _batch_norms(default)} == {0.1}
    config = TrainConfig(network=network, hidden_dim=8, embed_dim=4, batch_norm_momentum=0.9)
    model = build_model(config, 6, 5)
    norms = _batch_norms(model)
    assert len(norms) == (2 if network == "embedding" else 3)
    assert {m.momentum for m in norms} == {0.9}


def test_running_mean_follows_pytorchs_rule():
    config = TrainConfig(hidden_dim=8, embed_dim=4, batch_norm_momentum=0.9)
    model = build_model(config, 6, 5).train()
    image = torch.randn(10, 6, generator=torch.Generator().manual_seed(0))
    batch_mean = model.image_branch.fc1(image).mean(0).detach()
    model.embed_image(image)
    # running = (1 − 0.9)·0 + 0.9·batch mean
    torch.testing.assert_close(model.image_branch.bn.running_mean, 0.9 * batch_mean)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_distributed_batch_norms_keep_the_momentum(device):
    config = TrainConfig(network="similarity", hidden_dim=8, embed_dim=4, batch_norm_momentum=0.7)
    # Conversion only builds modules: no CUDA device or process group is needed.
    converted = convert_batch_norm(build_model(config, 6, 5), torch.device(device))
    kind = GlobalBatchNorm1d if device == "cpu" else nn.SyncBatchNorm
    norms = _batch_norms(converted)
    assert norms and all(type(m) is kind and m.momentum == 0.7 for m in norms)


def test_global_batch_norm_running_update_uses_the_momentum():
    norm = GlobalBatchNorm1d(3, momentum=0.25)
    norm.running_mean.fill_(4.0)
    norm.running_var.fill_(2.0)
    norm._update_running_stats(torch.tensor([8.0, 0.0, 4.0]), torch.tensor([6.0, 2.0, 10.0]))
    torch.testing.assert_close(norm.running_mean, torch.tensor([5.0, 3.0, 4.0]))
    torch.testing.assert_close(norm.running_var, torch.tensor([3.0, 2.0, 4.0]))


def test_momentum_outside_zero_one_is_refused():
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="batch_norm_momentum"):
            TrainConfig(batch_norm_momentum=bad)

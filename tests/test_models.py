"""Branch, embedding network and similarity network: shapes, norms, init, batched scoring."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models import Branch, EmbeddingNet, SimilarityNet


def test_branch_layers_shapes_and_unit_norm():
    torch.manual_seed(0)
    branch = Branch(12, hidden_dim=16, out_dim=5, dropout=0.5)
    layer_types = [type(layer) for layer in branch.children()]
    assert layer_types == [nn.Linear, nn.BatchNorm1d, nn.Dropout, nn.Linear]
    assert branch.dropout.p == 0.5
    out = branch(torch.randn(7, 12) * 10)
    assert out.shape == (7, 5)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(7))


def test_branch_without_normalization_is_not_unit():
    torch.manual_seed(0)
    branch = Branch(12, hidden_dim=16, out_dim=5, normalize=False).eval()
    norms = branch(torch.randn(7, 12) * 10).norm(dim=1)
    assert not torch.allclose(norms, torch.ones(7), atol=1e-2)


def test_branch_xavier_init_and_zero_bias():
    torch.manual_seed(0)
    branch = Branch(300, hidden_dim=400, out_dim=200)
    for linear in (branch.fc1, branch.fc2):
        fan_out, fan_in = linear.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        weight = linear.weight.detach()
        assert weight.abs().max() <= bound
        # Uniform(−b, b) fills the interval: the extremes come close to ±b, the std is b/√3.
        assert weight.abs().max() > 0.99 * bound
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
        assert torch.all(linear.bias == 0)


def test_branch_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dropout"):
        Branch(4, 4, 4, dropout=1.0)
    with pytest.raises(ValueError, match="positive"):
        Branch(0, 4, 4)


def test_embedding_net_two_unshared_branches():
    torch.manual_seed(1)
    net = EmbeddingNet(image_dim=10, text_dim=6, hidden_dim=32, embed_dim=4, dropout=0.1)
    image, text = torch.randn(5, 10), torch.randn(9, 6)
    u, v = net(image, text)
    assert u.shape == (5, 4) and v.shape == (9, 4)
    torch.testing.assert_close(u.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(v.norm(dim=1), torch.ones(9))
    net.eval()
    torch.testing.assert_close(net.embed_image(image), net.image_branch(image))
    torch.testing.assert_close(net.embed_text(text), net.text_branch(text))
    image_params = {id(p) for p in net.image_branch.parameters()}
    assert image_params.isdisjoint(id(p) for p in net.text_branch.parameters())


def test_embedding_net_defaults_follow_the_paper():
    net = EmbeddingNet(image_dim=4096, text_dim=6000)
    assert net.image_branch.fc1.weight.shape == (2048, 4096)
    assert net.text_branch.fc2.weight.shape == (512, 2048)


def _similarity_net() -> SimilarityNet:
    torch.manual_seed(2)
    net = SimilarityNet(image_dim=10, text_dim=6, hidden_dim=12, embed_dim=8, fusion_dim=16)
    # Non-trivial BatchNorm statistics so eval mode differs from a fresh layer.
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(32, 10) * 2 + 1, torch.randn(32, 6) - 0.5)
    return net.eval()


def test_similarity_net_forward_shape_and_head_layers():
    net = _similarity_net()
    logits = net(torch.randn(5, 10), torch.randn(5, 6))
    assert logits.shape == (5,)
    assert net.fusion_fc.weight.shape == (16, 8) and net.score_fc.weight.shape == (1, 16)
    assert net.fusion_bn.num_batches_tracked.item() == 3


@pytest.mark.parametrize("chunk", [1, 3, None])
def test_score_embedding_matrix_equals_per_pair_forward(chunk):
    net = _similarity_net()
    images, texts = torch.randn(7, 10), torch.randn(5, 6)
    with torch.no_grad():
        matrix = net.score_embedding_matrix(net.embed_image(images), net.embed_text(texts), chunk)
        rows = torch.arange(7).repeat_interleave(5)
        cols = torch.arange(5).repeat(7)
        expected = net(images[rows], texts[cols]).view(7, 5)
    assert matrix.shape == (7, 5)
    torch.testing.assert_close(matrix, expected, atol=1e-5, rtol=0)
    # Not a constant: the scores actually depend on the pair.
    assert matrix.std().item() > 1e-3


def test_score_candidates_equals_forward_on_listed_pairs():
    net = _similarity_net()
    images, texts = torch.randn(4, 10), torch.randn(6, 6)
    pairs = torch.tensor([[0, 5], [3, 0], [3, 1], [2, 2], [0, 0]])
    with torch.no_grad():
        scores = net.score_candidates(net.embed_image(images), net.embed_text(texts), pairs, 2)
        expected = net(images[pairs[:, 0]], texts[pairs[:, 1]])
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)


def test_score_embedding_matrix_backpropagates():
    net = _similarity_net()
    images = torch.randn(3, 10, requires_grad=True)
    texts = net.embed_text(torch.randn(4, 6))
    net.score_embedding_matrix(net.embed_image(images), texts, chunk=2).sum().backward()
    assert images.grad is not None and images.grad.abs().sum().item() > 0


def test_score_embedding_matrix_rejects_bad_chunk():
    net = _similarity_net()
    with pytest.raises(ValueError, match="chunk"):
        net.score_embedding_matrix(torch.randn(2, 8), torch.randn(2, 8), chunk=0)

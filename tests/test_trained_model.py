"""load_two_branch: a small trained checkpoint of each network loads with its config, device and
(when asked) text encoder, and scores exactly as the network scored when it was trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ops.data.tokenize import tokenize
from ops.features.text.encoder_store import save_text_encoders
from ops.features.text.settings import TextFeatureSettings
from ops.features.text.text_features import fit_text_encoders
from ops.features.text.word_vectors import WordVectors
from ops.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ops.training.config import TrainConfig
from ops.training.placement import DeviceFeatures
from ops.training.trained_model import TrainedTwoBranch, load_two_branch
from ops.training.trainer import train
from ops.training.validate import validate
from tests.training_problems import SMALL, make_image_sentence

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["embedding", "similarity"])
def trained_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp(request.param)
    train_data, val_data = make_image_sentence(60, 0), make_image_sentence(20, 1)
    config = TrainConfig(network=request.param, epochs=2, **SMALL)
    return config, train(config, train_data, val_data, folder), val_data, folder / "best.pt"


def test_a_trained_checkpoint_scores_as_it_did_in_training(trained_run) -> None:
    config, result, val_data, checkpoint = trained_run
    trained = load_two_branch(checkpoint, "cpu")
    assert isinstance(trained, TrainedTwoBranch)
    assert trained.config == config and trained.device == torch.device("cpu")
    assert (trained.image_dim, trained.text_dim) == (64, 48)
    assert trained.text_encoders is None and not trained.network.training
    for name, tensor in trained.network.state_dict().items():
        assert torch.equal(tensor, result.model_state[name])
    features = DeviceFeatures.of(val_data, trained.device)
    score, _ = validate(
        trained.network,
        val_data,
        features,
        config.network,
        chunk=config.eval_chunk,
        amp=config.amp,
        iou_threshold=config.localization_iou,
    )
    assert score == result.best_val_score
    # Rows embedded from numpy (the index and query path) are the network's own embeddings.
    with torch.no_grad():
        images = trained.network.embed_image(torch.from_numpy(val_data.image_features)).numpy()
        texts = trained.network.embed_text(torch.from_numpy(val_data.text_features)).numpy()
    np.testing.assert_array_equal(trained.embed_images(val_data.image_features), images)
    np.testing.assert_array_equal(trained.embed_texts(val_data.text_features), texts)
    assert np.abs(images[0] - images[1]).max() > 1e-3


def test_features_of_other_dimensions_are_refused(trained_run) -> None:
    _, _, _, checkpoint = trained_run
    trained = load_two_branch(checkpoint, "cpu")
    trained.check_feature_dims(64, 48)
    with pytest.raises(ValueError, match=r"best.pt: the network takes .* 64/48, .* 64/50"):
        trained.check_feature_dims(64, 50)


def test_the_text_encoder_loads_with_the_network(trained_run, tmp_path: Path) -> None:
    _, _, _, checkpoint = trained_run
    words = "a red blue circle square small big on left right".split()
    matrix = np.random.default_rng(0).standard_normal((len(words), 6)).astype(np.float32)
    wv = WordVectors({word: row for row, word in enumerate(words)}, matrix, "rand6")
    texts = [" ".join(np.random.default_rng(k).choice(words, size=5)) for k in range(50)]
    fitted = fit_text_encoders(texts, wv, TextFeatureSettings())
    path = save_text_encoders(fitted, tmp_path / "text_mean.encoder.npz")
    trained = load_two_branch(checkpoint, "cpu", text_encoder=path)
    assert trained.text_encoders is not None
    queries = [tokenize("a big red circle"), tokenize("square on the left")]
    np.testing.assert_array_equal(trained.text_encoders.encode(queries), fitted.encode(queries))


def test_weights_that_do_not_fit_the_recorded_network_name_the_file(
    trained_run, tmp_path: Path
) -> None:
    _, _, _, checkpoint = trained_run
    payload = load_checkpoint(checkpoint)
    payload["model_dims"] = {**payload["model_dims"], "text_dim": 47}
    broken = save_checkpoint(tmp_path / "best.pt", payload)
    with pytest.raises(CheckpointError, match=r"best.pt: weights do not fit the network"):
        load_two_branch(broken, "cpu")

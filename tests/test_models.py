import numpy as np
import pytest

from core import models
from core.datasets import load_mnist_test
from core.errors import ModelError
from tests.conftest import canvas, mnist_test_available


@pytest.fixture(scope="module")
def predictor():
    return models.Predictor.load()


def test_shipped_model_is_the_simple_convnet(predictor):
    assert predictor.model.count_params() == 34826
    assert predictor.model.input_shape == (None, 28, 28, 1)


def test_build_simple_cnn_has_34826_trainable_parameters():
    m = models.build_simple_cnn()
    assert sum(int(np.prod(w.shape)) for w in m.trainable_weights) == 34826


@pytest.mark.skipif(not mnist_test_available(), reason="official MNIST test set not on this machine")
def test_shipped_model_reaches_97_percent_on_the_official_mnist_test_set(predictor):
    test = load_mnist_test()
    proba = predictor.predict_proba(models.to_model_input(test.images))
    assert np.mean(proba.argmax(1) == test.labels) >= 0.97


def test_predict_proba_is_a_distribution_and_matches_model_predict(predictor):
    x = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    p = predictor.predict_proba(x)
    assert p.shape == (3, 10) and np.allclose(p.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(p, predictor.model.predict(x[..., None], verbose=0), atol=1e-5)


def test_classify_a_drawn_vertical_stroke_as_one(predictor):
    pred = models.classify(predictor, canvas([((140, 50), (140, 230))]), "mnist")
    assert pred.digit == 1 and pred.confidence > 0.5 and len(pred.probabilities) == 10


def test_classify_blank_is_not_classified(predictor):
    pred = models.classify(predictor, np.full((280, 280, 4), 255, np.uint8), "paper")
    assert pred.digit is None and pred.probabilities is None and pred.reframed.blank


def test_naive_reframing_collapses_to_one_answer(predictor):
    """Dark-on-white drawings through `naive` all look alike to the model: that is what the page teaches."""
    shapes = [
        [((140, 50), (140, 230))],
        [((80, 60), (200, 60)), ((200, 60), (100, 230))],
        [((90, 70), (190, 70)), ((190, 70), (190, 220)), ((90, 220), (190, 220)), ((90, 145), (190, 145))],
        [((100, 60), (100, 140)), ((100, 140), (200, 140)), ((180, 60), (180, 230))],
    ]
    naive = {models.classify(predictor, canvas(s), "naive").digit for s in shapes}
    assert len(naive) == 1


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="No model file"):
        models.load_model(tmp_path / "none.keras")


def test_imagenet_weights_offline_are_refused_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="not available offline.*--weights PATH.*'none'"):
        models.resolve_imagenet_weights("vgg16", "imagenet", 48)
    assert models.resolve_imagenet_weights("vgg16", "none", 48) is None

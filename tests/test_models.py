"""Model sizes are part of the paper's setting: pin them."""

import jax
import pytest

from ifscale.models import MODELS, build_model, count_params, init_params
from ifscale.utils import ConfigError

# The Flax MNIST example CNN (flax examples/mnist/train_test.py pins the same count).
CNN_LARGE_PARAMS = 824_458
CNN_SMALL_PARAMS = 2_698
SMALL_RANGE = (2_500, 3_500)  # "a CNN with 3k parameters" (Koh & Liang)


# dattri's MNIST-10 benchmark models: 784*10 + 10, and 784*128+128 + 128*64+64 + 64*10+10.
LOGREG_PARAMS, MLP_PARAMS = 7_850, 109_386


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cnn_large", CNN_LARGE_PARAMS),
        ("cnn_small", CNN_SMALL_PARAMS),
        ("logreg", LOGREG_PARAMS),
        ("mlp", MLP_PARAMS),
    ],
)
def test_parameter_counts(name, expected):
    params = init_params(build_model(name), (28, 28, 1), jax.random.key(0))
    assert count_params(params) == expected


def test_small_model_is_in_the_papers_range():
    assert SMALL_RANGE[0] <= CNN_SMALL_PARAMS <= SMALL_RANGE[1]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_map_images_to_logits(name):
    model = build_model(name, num_classes=7)
    params = init_params(model, (28, 28, 1), jax.random.key(1))
    logits = model.apply({"params": params}, jax.numpy.zeros((3, 28, 28, 1)))
    assert logits.shape == (3, 7)


def test_unknown_model_names_the_key():
    with pytest.raises(ConfigError, match="model.name"):
        build_model("resnet9000")


def test_the_mlp_drops_out_only_while_training():
    model = build_model("mlp")
    params = init_params(model, (28, 28, 1), jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
    again = model.apply({"params": params}, x)
    assert (model.apply({"params": params}, x) == again).all()  # no dropout by default
    dropped = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not (dropped == again).all()

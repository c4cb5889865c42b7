import numpy as np
import pytest

from tf_distill import architectures
from tf_distill import data
from tf_distill.backend import keras


def _cnn_params(filters, num_classes, channels=1):
    """Hand count: bias-free 3×3 convs, BatchNorm (4 per channel), Dense head."""
    widths = [channels] + list(filters)
    convs = sum(9 * widths[i] * widths[i + 1] for i in range(len(filters)))
    batch_norms = 4 * sum(filters)
    features = filters[-1] * filters[-1] + filters[-1]
    logits = filters[-1] * num_classes + num_classes
    return convs + batch_norms + features + logits


def _mlp_params(inputs, units, num_classes):
    widths = [inputs] + list(units) + [num_classes]
    return sum(widths[i] * widths[i + 1] + widths[i + 1] for i in range(len(widths) - 1))


EXPECTED_WIDTHS = {
    ("cnn", "small"): (8, 16, 32),
    ("cnn", "medium"): (16, 32, 64),
    ("cnn", "large"): (48, 96, 192),
    ("mlp", "small"): (16, 8),
    ("mlp", "medium"): (32, 16),
    ("mlp", "large"): (96, 48),
}


def test_names():
    assert architectures.names() == ["cnn", "mlp"]
    assert list(architectures.SIZES) == ["small", "medium", "large"]


@pytest.mark.parametrize("architecture", ["mlp", "cnn"])
@pytest.mark.parametrize("size", ["small", "medium", "large"])
@pytest.mark.parametrize("input_shape", [(8, 8, 1), (28, 28, 1)])
def test_build_every_name_and_size(architecture, size, input_shape):
    model = architectures.build(architecture, input_shape, 10, size=size)
    assert isinstance(model, keras.Model)
    assert model.name == f"{architecture}_{size}"
    assert tuple(model.output.shape) == (None, 10)
    assert tuple(model.input.shape) == (None,) + input_shape
    assert model.layers[-1].name == "logits"
    # Logits, not probabilities: the last layer has no activation.
    assert model.get_layer("logits").get_config()["activation"] == "linear"
    widths = EXPECTED_WIDTHS[(architecture, size)]
    assert tuple(model.get_layer("features").output.shape) == (None, widths[-1])
    if architecture == "cnn":
        expected = _cnn_params(widths, 10)
        for block, filters in enumerate(widths, start=1):
            assert model.get_layer(f"block{block}_conv").output.shape[-1] == filters
    else:
        expected = _mlp_params(int(np.prod(input_shape)), widths, 10)
        assert model.get_layer("dense1").output.shape[-1] == widths[0]
    assert architectures.count_params(model) == expected == model.count_params()
    batch = np.random.default_rng(0).random((3,) + input_shape).astype("float32")
    logits = model(batch, training=False).numpy()
    assert logits.shape == (3, 10) and np.all(np.isfinite(logits))


def test_parameter_counts_fit_teacher_and_student_roles():
    mnist = (28, 28, 1)
    teacher = architectures.build("cnn", mnist, 10, size="large")
    student = architectures.build("cnn", mnist, 10, size="small")
    mlp_student = architectures.build("mlp", mnist, 10, size="small")
    assert 100_000 <= architectures.count_params(teacher) <= 400_000
    assert 5_000 <= architectures.count_params(student) <= 20_000
    assert 5_000 <= architectures.count_params(mlp_student) <= 20_000
    # BatchNorm's moving mean and variance are weights, but not trainable.
    moving_statistics = 2 * sum(EXPECTED_WIDTHS[("cnn", "small")])
    assert architectures.count_params(student, trainable_only=True) == (
        architectures.count_params(student) - moving_statistics
    )
    assert architectures.count_params(mlp_student, trainable_only=True) == 12786


@pytest.mark.parametrize(
    "input_shape, pools, last_map",
    [
        ((28, 28, 1), ["block1_pool", "block2_pool"], (7, 7)),
        ((8, 8, 1), ["block1_pool", "block2_pool"], (2, 2)),
        ((2, 2, 1), ["block1_pool"], (1, 1)),
        ((1, 1, 3), [], (1, 1)),
    ],
)
def test_cnn_pools_only_while_the_feature_map_allows(input_shape, pools, last_map):
    model = architectures.build("cnn", input_shape, 4)
    names = [layer.name for layer in model.layers]
    assert [name for name in names if name.endswith("_pool") and name != "global_pool"] == pools
    assert tuple(model.get_layer("block3_relu").output.shape[1:3]) == last_map
    assert names[-3:] == ["global_pool", "features", "logits"]


def test_cnn_accepts_images_without_channel_axis():
    model = architectures.build("cnn", (12, 12), 3)
    assert model.layers[1].name == "add_channel"
    assert tuple(model.get_layer("block1_conv").output.shape) == (None, 12, 12, 8)
    assert tuple(model(np.zeros((2, 12, 12), "float32")).shape) == (2, 3)


def test_width_multiplier_and_name():
    model = architectures.build("cnn", (8, 8, 1), 10, size=0.25, name="tiny_student")
    assert model.name == "tiny_student"
    assert [model.get_layer(f"block{i}_conv").output.shape[-1] for i in (1, 2, 3)] == [4, 8, 16]
    assert architectures.build("mlp", (64,), 10, size=2).name == "mlp_x2"
    assert (
        architectures.build("mlp", (64,), 10, size=2).get_layer("features").output.shape[-1] == 32
    )
    # Widths never round down to zero.
    assert (
        architectures.build("mlp", (64,), 10, size=0.01).get_layer("features").output.shape[-1] == 1
    )


def test_dropout_sits_between_features_and_logits():
    model = architectures.build("mlp", (8, 8, 1), 10, dropout=0.3, seed=0)
    names = [layer.name for layer in model.layers]
    assert names[-3:] == ["features", "dropout", "logits"]
    assert model.get_layer("dropout").rate == pytest.approx(0.3)
    assert "dropout" not in [
        layer.name for layer in architectures.build("mlp", (8, 8, 1), 10).layers
    ]
    batch = np.ones((4, 8, 8, 1), "float32")
    np.testing.assert_array_equal(model(batch, training=False), model(batch, training=False))
    assert not np.array_equal(model(batch, training=True), model(batch, training=False))


@pytest.mark.parametrize("architecture", ["mlp", "cnn"])
def test_seed_makes_the_model_reproducible(architecture):
    first = architectures.build(architecture, (8, 8, 1), 10, seed=3)
    second = architectures.build(architecture, (8, 8, 1), 10, seed=3)
    other = architectures.build(architecture, (8, 8, 1), 10, seed=4)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    kernel = first.get_layer("logits").get_weights()[0]
    assert not np.array_equal(kernel, other.get_layer("logits").get_weights()[0])


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["mlp", "cnn"])
def test_tiny_fit_reduces_loss_on_digits(architecture):
    splits = data.load("digits")
    x, y = splits.x_train[:512], splits.y_train[:512]
    model = architectures.build(architecture, splits.input_shape, splits.num_classes, seed=0)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = model.evaluate(x, y, batch_size=512, verbose=0)
    model.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0)
    after = model.evaluate(x, y, batch_size=512, verbose=0)
    assert before > 2.0  # About log(10) at the start.
    assert after < 0.75 * before


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"architecture": "resnet"},
            r"Unknown architecture\. Expected one of \['cnn', 'mlp'\]\. Received: architecture='resnet'",
        ),
        (
            {"size": "huge"},
            r"Unknown size\. Expected one of \['small', 'medium', 'large'\] or a width multiplier > 0\. Received: size='huge'",
        ),
        ({"size": 0}, r"`size` must be one of .* Received: size=0"),
        ({"size": True}, r"Received: size=True"),
        (
            {"input_shape": (8, 0, 1)},
            r"`input_shape` must be a non-empty tuple of positive integers.*Received: input_shape=\(8, 0, 1\)",
        ),
        ({"input_shape": 8}, r"Received: input_shape=8"),
        (
            {"architecture": "cnn", "input_shape": (64,)},
            r"The cnn architecture needs images.*Received: input_shape=\(64,\)",
        ),
        ({"num_classes": 0}, r"`num_classes` must be an integer >= 1\. Received: num_classes=0"),
        ({"dropout": 1.0}, r"`dropout` must be in \[0, 1\)\. Received: dropout=1\.0"),
        ({"seed": "0"}, r"`seed` must be an integer or None\. Received: seed='0'"),
    ],
)
def test_build_errors(kwargs, message):
    arguments = {"architecture": "mlp", "input_shape": (8, 8, 1), "num_classes": 10}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        architectures.build(**arguments)

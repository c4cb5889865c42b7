"""Tests of `tf_distill.taps`: a model's logits and named layers in one pass."""

import warnings

import numpy as np
import pytest

from tf_distill import Distiller
from tf_distill import FeatureDistillation
from tf_distill import taps
from tf_distill.backend import keras


def sequential_model():
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, activation="relu", name="first"),
            keras.layers.Dense(4, activation="tanh", name="second"),
            keras.layers.Dense(3, name="logits"),
        ],
        name="sequential",
    )


def nested_model():
    """A Functional model holding a Sequential block and its own layers."""
    block = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, name="inner"), keras.layers.ReLU(name="act")],
        name="block",
    )
    inputs = keras.Input((6,), name="features")
    hidden = block(inputs)
    hidden = keras.layers.Dense(4, name="act_outer")(hidden)
    outputs = keras.layers.Dense(3, name="logits")(hidden)
    return keras.Model(inputs, outputs, name="nested")


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(4, name="hidden")
        self.out = keras.layers.Dense(5, name="out")

    def call(self, inputs):
        return self.out(self.hidden(inputs))


def test_layer_names_include_nested_paths():
    assert taps.layer_names(sequential_model()) == ["first", "second", "logits"]
    assert taps.layer_names(nested_model()) == [
        "features",
        "block",
        "block/inner",
        "block/act",
        "act_outer",
        "logits",
    ]


def test_find_layer_by_name_and_path():
    model = nested_model()
    assert taps.find_layer(model, "act_outer") is model.get_layer("act_outer")
    block = model.get_layer("block")
    assert taps.find_layer(model, "block/inner") is block.get_layer("inner")
    # A unique name inside a sub-model is found without its path.
    assert taps.find_layer(model, "inner") is block.get_layer("inner")


def test_find_layer_errors():
    with pytest.raises(
        ValueError,
        match=r"No layer named 'missing' in the student model 'nested'. Available layers: "
        r"\['features', 'block', 'block/inner', 'block/act', 'act_outer', 'logits'\]",
    ):
        taps.find_layer(nested_model(), "missing", role="student")

    inputs = keras.Input((6,))
    first = keras.Sequential([keras.Input((6,)), keras.layers.Dense(6, name="dense")], name="a")
    second = keras.Sequential([keras.Input((6,)), keras.layers.Dense(6, name="dense")], name="b")
    model = keras.Model(inputs, second(first(inputs)), name="twice")
    with pytest.raises(
        ValueError,
        match=r"Layer name 'dense' is ambiguous in the teacher model 'twice'.*`submodel/layer`",
    ):
        taps.find_layer(model, "dense", role="teacher")
    assert taps.find_layer(model, "b/dense") is second.get_layer("dense")


@pytest.mark.parametrize(
    "build", [sequential_model, nested_model], ids=["sequential", "functional"]
)
def test_tap_model_returns_logits_and_features_of_one_pass(build):
    model = build()
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    names = ["second"] if build is sequential_model else ["act_outer", "block"]
    tapped = taps.tap_model(model, names + [None, names[0]])
    outputs = tapped(x)
    assert sorted(outputs) == sorted([taps.LOGITS] + names)
    np.testing.assert_allclose(outputs[taps.LOGITS], model(x), rtol=1e-6)
    for name in names:
        layer = taps.find_layer(model, name)
        expected = keras.Model(model.inputs[0], layer.output)(x)
        np.testing.assert_allclose(outputs[name], expected, rtol=1e-6)
    # The tap shares the model's variables: training it trains the model.
    assert {id(v) for v in tapped.trainable_variables} == {id(v) for v in model.trainable_variables}


def test_tap_model_takes_the_inputs_the_model_takes():
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    for model in (sequential_model(), nested_model()):
        tapped = taps.tap_model(model, ["logits"])
        with warnings.catch_warnings():
            # Keras warns when a tensor is passed to a model expecting a list.
            warnings.simplefilter("error")
            np.testing.assert_allclose(tapped(x)["logits"], model(x), rtol=1e-6)

    first, second = keras.Input((6,), name="first"), keras.Input((2,), name="second")
    hidden = keras.layers.Dense(4, name="hidden")(keras.layers.Concatenate()([first, second]))
    model = keras.Model({"first": first, "second": second}, keras.layers.Dense(3)(hidden))
    inputs = {"second": np.ones((4, 2), "float32"), "first": x}
    outputs = taps.tap_model(model, ["hidden"])(inputs)
    np.testing.assert_allclose(outputs[taps.LOGITS], model(inputs), rtol=1e-6)
    expected = keras.Model(model.input, model.get_layer("hidden").output)(inputs)
    np.testing.assert_allclose(outputs["hidden"], expected, rtol=1e-6)


def test_tap_model_without_names_is_none():
    assert taps.tap_model(sequential_model(), []) is None
    assert taps.tap_model(sequential_model(), [None, None]) is None


def test_tap_model_refuses_a_subclassed_model():
    model = Subclassed(name="custom")
    model(np.zeros((1, 3), "float32"))
    assert not taps.is_symbolic(model)
    assert taps.is_symbolic(sequential_model())
    with pytest.raises(
        ValueError,
        match=r"Tapping layers \['hidden'\] needs a Functional or Sequential student model "
        r"with known inputs; 'custom' is subclassed",
    ):
        taps.tap_model(model, ["hidden"], role="student")


def test_tap_model_refuses_a_layer_inside_a_nested_model():
    with pytest.raises(ValueError, match=r"Tap the sub-model itself \('block'\)"):
        taps.tap_model(nested_model(), ["block/inner"], role="teacher")


def test_distiller_refuses_layer_names_on_a_subclassed_student(make_mlp):
    student = Subclassed(name="custom")
    student(np.zeros((1, 8), "float32"))
    loss = FeatureDistillation(teacher_layer_name="teacher_logits", student_layer_name="out")
    with pytest.raises(ValueError, match="needs a Functional or Sequential student model"):
        Distiller(make_mlp("teacher"), student, loss)

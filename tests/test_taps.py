"""Tests of `tf_distill.taps`: a model's logits and named layers in one pass."""

import warnings

import numpy as np
import pytest
from recording import RecordCalls

from tf_distill import Distiller
from tf_distill import FeatureDistillation
from tf_distill import taps
from tf_distill.backend import LEGACY_KERAS
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
        match=r"Tapping layers \['hidden'\] of the student model 'custom' needs a graph "
        r"of its layers, and it is subclassed\. .*`inputs = keras\.Input\(input_shape\); "
        r"model = keras\.Model\(inputs, subclassed\.call\(inputs\)\)`",
    ):
        taps.tap_model(model, ["hidden"], role="student")


def deeply_nested_model(prefix="", outer="functional"):
    """`stem -> mid(Functional: block(Sequential: inner, act) -> mid_dense)
    -> head -> logits`, with a call counter at each level."""
    block = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4, name=f"{prefix}inner"),
            RecordCalls(name=f"{prefix}block_calls"),
            keras.layers.ReLU(name=f"{prefix}act"),
        ],
        name=f"{prefix}block",
    )
    mid_inputs = keras.Input((5,))
    mid_outputs = keras.layers.Dense(4, activation="tanh", name=f"{prefix}mid_dense")(
        RecordCalls(name=f"{prefix}mid_calls")(block(mid_inputs))
    )
    mid = keras.Model(mid_inputs, mid_outputs, name=f"{prefix}mid")
    layers = [
        keras.layers.Dense(5, activation="relu", name=f"{prefix}stem"),
        mid,
        RecordCalls(name=f"{prefix}outer_calls"),
        keras.layers.Dense(3, name=f"{prefix}head"),
    ]
    if outer == "sequential":
        return keras.Sequential([keras.Input((6,))] + layers, name=f"{prefix}outer")
    x = inputs = keras.Input((6,), name=f"{prefix}features")
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{prefix}outer")


def separate_outputs(model, x, prefix=""):
    """Each tapped output computed the slow way: one extractor per level."""
    stem = keras.Model(model.inputs[0], model.get_layer(f"{prefix}stem").output)(x)
    mid = model.get_layer(f"{prefix}mid")
    block = mid.get_layer(f"{prefix}block")
    inner = keras.Model(block.inputs[0], block.get_layer(f"{prefix}inner").output)(stem)
    act = block(stem)
    return {
        f"{prefix}mid/{prefix}block/{prefix}inner": inner,
        f"{prefix}mid/{prefix}block": act,
        f"{prefix}mid/{prefix}mid_dense": mid(stem),
        f"{prefix}stem": stem,
        taps.LOGITS: model(x),
    }


def call_counts(model):
    """Eager calls of the counters at each nesting level."""
    mid = model.get_layer("mid")
    return {
        "outer": len(model.get_layer("outer_calls").training_flags),
        "mid": len(mid.get_layer("mid_calls").training_flags),
        "block": len(mid.get_layer("block").get_layer("block_calls").training_flags),
    }


@pytest.mark.skipif(LEGACY_KERAS, reason="nested taps need Keras 3's clone_model")
@pytest.mark.parametrize("outer", ["functional", "sequential"])
def test_tap_model_taps_layers_inside_nested_sub_models(outer):
    model = deeply_nested_model(outer=outer)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    names = ["mid/block/inner", "mid/block", "mid/mid_dense", "stem"]
    tapped = taps.tap_model(model, names)
    expected = separate_outputs(model, x)
    # Each separate extractor ran its own layers again: reset the counters.
    for layer in (model.get_layer("outer_calls"), model.get_layer("mid").get_layer("mid_calls")):
        layer.training_flags.clear()
    block = model.get_layer("mid").get_layer("block")
    block.get_layer("block_calls").training_flags.clear()

    outputs = tapped(x, training=False)
    assert sorted(outputs) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(outputs[key], value, rtol=1e-6, atol=1e-7, err_msg=key)
    # One forward pass: every level ran once.
    assert call_counts(model) == {"outer": 1, "mid": 1, "block": 1}
    # The same variable objects, none copied.
    assert {id(v) for v in tapped.weights} == {id(v) for v in model.weights}
    assert len(tapped.trainable_variables) == len(model.trainable_variables) == 8
    # Shared, not copied: a change to the model's inner kernel shows in the tap.
    kernel = block.get_layer("inner").kernel
    kernel.assign(kernel * 2.0)
    np.testing.assert_allclose(tapped(x)[taps.LOGITS], model(x), rtol=1e-6)
    np.testing.assert_allclose(
        tapped(x)["mid/block/inner"],
        keras.Model(block.inputs[0], block.get_layer("inner").output)(
            keras.Model(model.inputs[0], model.get_layer("stem").output)(x)
        ),
        rtol=1e-6,
    )


@pytest.mark.skipif(LEGACY_KERAS, reason="nested taps need Keras 3's clone_model")
def test_a_unique_inner_name_is_tapped_without_its_path():
    model = deeply_nested_model()
    x = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    outputs = taps.tap_model(model, ["inner"])(x)
    np.testing.assert_allclose(
        outputs["inner"], separate_outputs(model, x)["mid/block/inner"], rtol=1e-6
    )


@pytest.mark.skipif(LEGACY_KERAS, reason="nested taps need Keras 3's clone_model")
def test_tap_model_refuses_a_nested_model_called_twice():
    block = keras.Sequential([keras.Input((6,)), keras.layers.Dense(6, name="inner")], name="block")
    inputs = keras.Input((6,))
    twice = block(keras.layers.Dense(6, name="between")(block(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(3)(twice), name="twice")
    with pytest.raises(
        ValueError,
        match=r"Cannot tap \['block/inner'\] in the teacher model 'twice': the layer 'block' "
        r"is called more than once in its graph, so which call's output to tap is ambiguous",
    ):
        taps.tap_model(model, ["block/inner"], role="teacher")
    # The same holds for a layer of the outer graph called twice.
    shared = keras.layers.Dense(6, name="shared")
    model = keras.Model(inputs, keras.layers.Dense(3)(shared(shared(inputs))), name="shared_twice")
    with pytest.raises(ValueError, match=r"Cannot tap \['shared'\].*called more than once"):
        taps.tap_model(model, ["shared"], role="student")


@pytest.mark.skipif(LEGACY_KERAS, reason="nested taps need Keras 3's clone_model")
def test_a_layer_shared_with_another_model_is_tapped_in_this_one():
    """A layer whose first call was in another model: its call here is used."""
    shared = keras.layers.Dense(4, name="shared")
    other_inputs = keras.Input((6,))
    keras.Model(other_inputs, shared(other_inputs))
    inputs = keras.Input((6,))
    scaled = keras.layers.Rescaling(3.0, name="scale")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(shared(scaled)), name="sharing")
    x = np.random.default_rng(2).normal(size=(3, 6)).astype("float32")
    outputs = taps.tap_model(model, ["shared"])(x)
    np.testing.assert_allclose(outputs["shared"], shared(3.0 * x), rtol=1e-6)
    np.testing.assert_allclose(outputs[taps.LOGITS], model(x), rtol=1e-6)


def test_tap_model_refuses_a_layer_inside_a_subclassed_sub_model():
    inner_model = Subclassed(name="custom")
    inner_model(np.zeros((1, 6), "float32"))
    inputs = keras.Input((6,))
    model = keras.Model(inputs, inner_model(inputs), name="holder")
    message = (
        r"Cannot tap 'custom/hidden': the sub-model 'custom' of the student model is subclassed"
        if not LEGACY_KERAS
        else "needs Keras 3"
    )
    with pytest.raises(ValueError, match=message):
        taps.tap_model(model, ["custom/hidden"], role="student")


@pytest.mark.legacy_keras
@pytest.mark.skipif(not LEGACY_KERAS, reason="needs TF_USE_LEGACY_KERAS=1")
def test_tf_keras_refuses_nested_taps_clearly():
    with pytest.raises(
        ValueError,
        match=r"Tapping layers inside nested sub-models \(\['block/inner'\]\) of the teacher "
        r"model needs Keras 3.*Tap the sub-model itself \('block'\)",
    ):
        taps.tap_model(nested_model(), ["block/inner"], role="teacher")
    # Layers of the outer model are still tapped, in one pass.
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    model = nested_model()
    outputs = taps.tap_model(model, ["act_outer"])(x)
    assert sorted(outputs) == ["act_outer", taps.LOGITS]
    np.testing.assert_allclose(outputs[taps.LOGITS], model(x), rtol=1e-6)


@pytest.mark.skipif(LEGACY_KERAS, reason="nested taps need Keras 3's clone_model")
def test_distiller_distills_a_nested_layer_in_one_student_pass(tiny_data):
    """FeatureDistillation between layers nested two levels deep in both models."""
    x, y = tiny_data
    y = y % 3  # The models output 3 classes.

    def model(prefix):
        # 8 input features, as tiny_data has.
        base = deeply_nested_model(prefix=prefix)
        inputs = keras.Input((8,))
        return keras.Model(
            inputs, base(keras.layers.Dense(6, name=f"{prefix}in")(inputs)), name=f"{prefix}model"
        )

    teacher, student = model("t_"), model("s_")
    loss = FeatureDistillation(
        "mse", "t_outer/t_mid/t_block/t_inner", "s_outer/s_mid/s_block/s_inner"
    )
    distiller = Distiller(teacher, student, loss)
    # Each variable once: the rebuilt tap adds no copy for the optimizer.
    trainable = [id(v) for v in distiller.trainable_variables]
    assert sorted(trainable) == sorted(id(v) for v in student.trainable_variables)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss="sparse_categorical_crossentropy",
        run_eagerly=True,
    )

    def inner_of(model, prefix):
        outer = model.get_layer(f"{prefix}outer")
        first = keras.Model(model.inputs[0], model.get_layer(f"{prefix}in").output)(x)
        return separate_outputs(outer, first, prefix)[f"{prefix}mid/{prefix}block/{prefix}inner"]

    expected = np.mean(
        (
            np.asarray(inner_of(teacher, "t_"), np.float64)
            - np.asarray(inner_of(student, "s_"), np.float64)
        )
        ** 2
    )
    counters = [
        m.get_layer(f"{p}outer")
        .get_layer(f"{p}mid")
        .get_layer(f"{p}block")
        .get_layer(f"{p}block_calls")
        for m, p in ((teacher, "t_"), (student, "s_"))
    ]
    for counter in counters:
        counter.training_flags.clear()
    history = distiller.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
    np.testing.assert_allclose(history["distillation_loss"][0], expected, rtol=1e-5)
    assert counters[0].training_flags == [False] * 4
    assert counters[1].training_flags == [True] * 4

    # With a learning rate, the student's nested layer moves and the teacher's does not.
    distiller.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    before = [w.numpy().copy() for w in (teacher.weights + student.weights)]
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    after = [w.numpy() for w in (teacher.weights + student.weights)]
    count = len(teacher.weights)
    assert all(np.array_equal(a, b) for a, b in zip(before[:count], after[:count]))
    inner_kernel = student.get_layer("s_outer").get_layer("s_mid").get_layer("s_block")
    inner_kernel = inner_kernel.get_layer("s_inner").kernel
    index = [id(w) for w in student.weights].index(id(inner_kernel))
    assert not np.array_equal(before[count + index], inner_kernel.numpy())


def test_distiller_refuses_layer_names_on_a_subclassed_student(make_mlp):
    student = Subclassed(name="custom")
    student(np.zeros((1, 8), "float32"))
    loss = FeatureDistillation(teacher_layer_name="teacher_logits", student_layer_name="out")
    with pytest.raises(ValueError, match=r"subclassed\.call\(inputs\)"):
        Distiller(make_mlp("teacher"), student, loss)


def np_mse(teacher_features, student_features):
    difference = np.asarray(teacher_features, np.float64) - np.asarray(student_features, np.float64)
    return (difference**2).mean(axis=1)


def layer_output(model, name, x):
    return keras.Model(model.inputs[0], model.get_layer(name).output)(x)


def test_the_functional_recipe_for_a_subclassed_student_taps_its_layers(make_mlp, tiny_data):
    """The recipe the refusal gives: the traced model shares the subclassed
    model's layers, and its inner layers are tapped by name."""
    x, y = tiny_data
    subclassed = Subclassed(name="custom")
    inputs = keras.Input((8,))
    student = keras.Model(inputs, subclassed.call(inputs))
    teacher = make_mlp("teacher", hidden=4)
    loss = FeatureDistillation(
        "mse", teacher_layer_name="teacher_hidden", student_layer_name="hidden"
    )
    distiller = Distiller(teacher, student, loss, student_loss_weight=0.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    expected = np_mse(layer_output(teacher, "teacher_hidden", x), subclassed.hidden(x)).mean()
    terms = distiller.compute_loss_terms(x, y)
    np.testing.assert_allclose(float(terms["distillation_loss"]), expected, rtol=1e-5)
    np.testing.assert_allclose(distiller(x), subclassed(x), rtol=1e-6)
    before = subclassed.hidden.kernel.numpy().copy()
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert not np.array_equal(before, subclassed.hidden.kernel.numpy())  # the same weights


def unbuilt_sequential(prefix):
    return keras.Sequential(
        [keras.layers.Dense(4, activation="relu", name=f"{prefix}_hidden"), keras.layers.Dense(5)],
        name=prefix,
    )


@pytest.mark.parametrize("unbuilt", ["student", "teacher"])
def test_an_unbuilt_sequential_is_built_on_the_other_models_inputs(make_mlp, tiny_data, unbuilt):
    x, y = tiny_data
    teacher = unbuilt_sequential("teacher") if unbuilt == "teacher" else make_mlp("teacher", 4)
    student = unbuilt_sequential("student") if unbuilt == "student" else make_mlp("student", 4)
    assert not taps.is_symbolic(teacher if unbuilt == "teacher" else student)
    loss = FeatureDistillation(
        "mse", teacher_layer_name="teacher_hidden", student_layer_name="student_hidden"
    )
    distiller = Distiller(teacher, student, loss, student_loss_weight=0.0)
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert taps.is_symbolic(teacher) and taps.is_symbolic(student)
    assert tuple(student.inputs[0].shape) == tuple(teacher.inputs[0].shape) == (None, 8)
    expected = np_mse(
        layer_output(teacher, "teacher_hidden", x), layer_output(student, "student_hidden", x)
    ).mean()
    assert expected > 1e-3
    terms = distiller.compute_loss_terms(x, y)
    np.testing.assert_allclose(float(terms["distillation_loss"]), expected, rtol=1e-5)
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))


def test_two_unbuilt_sequentials_are_refused_with_the_build_line(tiny_data):
    x, _ = tiny_data
    loss = FeatureDistillation(
        "mse", teacher_layer_name="teacher_hidden", student_layer_name="student_hidden"
    )
    teacher, student = unbuilt_sequential("teacher"), unbuilt_sequential("student")
    with pytest.raises(
        ValueError,
        match=r"Tapping layers \['teacher_hidden'\] of the teacher model 'teacher' needs its "
        r"input shape, .*`model\.build\(\(None, \*input_shape\)\)`",
    ):
        Distiller(teacher, student, loss)
    teacher.build((None, 8))  # the line the message gives
    distiller = Distiller(teacher, student, loss)
    assert tuple(student.inputs[0].shape) == (None, 8)
    np.testing.assert_allclose(distiller(x), student(x), rtol=1e-6)


def test_a_layer_named_logits_before_the_output_is_refused():
    from tf_distill import taps as taps_lib
    from tf_distill.backend import keras

    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="logits")(inputs)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match=r"layer named 'logits' that is not its final output"):
        taps_lib.tap_model(model, ["logits"], role="student")


def test_tapping_the_final_logits_layer_by_name_is_the_final_output():
    from tf_distill import taps as taps_lib
    from tf_distill.backend import keras

    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, name="hidden")(inputs)
    outputs = keras.layers.Dense(3, name="logits")(hidden)
    model = keras.Model(inputs, outputs)
    tap = taps_lib.tap_model(model, ["logits", "hidden"])
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    result = tap(x)
    np.testing.assert_allclose(result["logits"], model(x), atol=1e-6)
    assert result["hidden"].shape == (2, 5)

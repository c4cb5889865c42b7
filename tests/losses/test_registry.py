"""Tests of the loss registry: names, configs, errors."""

import importlib
import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tf_distill
from tf_distill import catalog
from tf_distill import losses
from tf_distill.backend import keras
from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.losses import registry

EXPECTED = {
    "kd": (losses.LogitsDistillation, {"temperature": 2.0, "loss": "reverse_kl"}),
    "feature": (losses.FeatureDistillation, {"loss": "l1"}),
    "fitnets": (losses.FitNetsDistillation, {"teacher_layer_name": "t3"}),
    "attention_transfer": (losses.AttentionDistillation, {"power": 1.0}),
    "rkd_distance": (losses.RelationalDistanceDistillation, {"student_layer_name": "emb"}),
    "rkd_angle": (losses.RelationalAngleDistillation, {"teacher_layer_name": "emb"}),
    "similarity_preserving": (losses.SimilarityPreservingDistillation, {}),
    "pkt": (losses.ProbabilisticTransferDistillation, {"student_layer_name": "pool"}),
    "dkd": (losses.DecoupledDistillation, {"alpha": 0.5, "beta": 2.0}),
    "dist": (losses.CorrelationDistillation, {"gamma": 2.0, "temperature": 1.0}),
}


def test_every_issue_name_is_registered():
    assert set(EXPECTED) <= set(losses.names())
    assert losses.names() == sorted(losses.names())
    described = {name: (cls, summary) for name, cls, summary in losses.describe()}
    for name, (cls, _) in EXPECTED.items():
        assert described[name][0] == cls.__name__
        assert described[name][1].strip()
        assert "\n" not in described[name][1]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_get_by_name_builds_the_default(name):
    cls, _ = EXPECTED[name]
    loss = losses.get(name)
    assert type(loss) is cls
    assert loss.get_config() == cls().get_config()
    # Names are read case- and space-insensitively.
    assert type(losses.get(f" {name.upper()} ")) is cls


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_round_trip(name):
    cls, arguments = EXPECTED[name]
    loss = losses.get({"name": name, **arguments})
    assert type(loss) is cls
    for key, value in arguments.items():
        assert loss.get_config()[key] == value

    config = losses.serialize(loss)
    assert config["name"] == name
    # A config is plain data: it survives JSON (and hence YAML).
    config = json.loads(json.dumps(config))
    restored = losses.get(config)
    assert type(restored) is cls
    assert restored.get_config() == loss.get_config()

    keras_config = json.loads(json.dumps(keras.saving.serialize_keras_object(loss)))
    for restored in (
        losses.deserialize(keras_config),
        losses.get(keras_config),
        keras.saving.deserialize_keras_object(keras_config),
    ):
        assert type(restored) is cls
        assert restored.get_config() == loss.get_config()


def test_get_returns_a_loss_object_unchanged():
    loss = losses.RelationalAngleDistillation()
    assert losses.get(loss) is loss


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        losses.get("vid")
    message = str(info.value)
    assert "Unknown distillation loss" in message
    assert "Received: 'vid'" in message
    for name in EXPECTED:
        assert repr(name) in message
    with pytest.raises(ValueError, match=r"Unknown distillation loss.*'rkd_angle'"):
        losses.get({"name": "rkd_anlge"})


@pytest.mark.parametrize(
    "config,message",
    [
        ({"name": "kd", "temperature": 0.0}, r"`temperature` must be > 0"),
        ({"name": "dist", "gamma": -1.0}, r"`gamma` must be >= 0"),
        ({"name": "attention_transfer", "power": "two"}, r"`power` must be a number"),
        (
            {"name": "rkd_angle", "temperature": 2.0},
            r"Invalid arguments for distillation loss 'rkd_angle'.*temperature"
            r".*Received: \{'temperature': 2.0\}",
        ),
        (
            {"name": "dkd", "alpah": 1.0},
            r"Invalid arguments for distillation loss 'dkd'.*alpah",
        ),
        ({"temperature": 4.0}, r"A loss config needs a `name` \(one of \[.*'kd'"),
    ],
)
def test_bad_configs_raise_with_message(config, message):
    with pytest.raises(ValueError, match=message):
        losses.get(config)


def test_bad_identifiers_raise_with_message():
    with pytest.raises(
        ValueError, match=r"Could not interpret distillation loss identifier.*Received: 3"
    ):
        losses.get(3)
    with pytest.raises(
        ValueError,
        match=r"Expected a DistillationLoss to serialize. Received: "
        r"loss='kd' of type str",
    ):
        losses.serialize("kd")
    with pytest.raises(ValueError, match=r"Expected a dict to deserialize.*Received: config='kd'"):
        losses.deserialize("kd")


def test_registering_a_taken_name_raises():
    class Imposter(losses.DistillationLoss):
        pass

    with pytest.raises(ValueError, match=r"already registered as 'kd'"):
        losses.register("kd", "not Hinton")(Imposter)
    assert losses.get("kd").__class__ is losses.LogitsDistillation
    # Registering the same class twice is harmless (module reloads).
    summary = {name: line for name, _, line in losses.describe()}["kd"]
    losses.register("kd", "again")(losses.LogitsDistillation)
    losses.register("kd", summary)(losses.LogitsDistillation)  # leave the registry as found
    assert registry._REGISTRY["kd"][0] is losses.LogitsDistillation


def test_user_losses_join_the_registry():
    @register_serializable()
    class MeanGap(losses.DistillationLoss):
        """A keras.distillation-style loss: only `compute_loss`, a scalar."""

        def __init__(self, scale=1.0):
            self.scale = scale

        def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
            return self.scale * tf.reduce_mean(tf.abs(teacher_outputs - student_outputs))

        def get_config(self):
            return {"scale": self.scale}

    try:
        losses.register("test_mean_gap", "Mean absolute gap (test only)")(MeanGap)
        loss = losses.get({"name": "test_mean_gap", "scale": 2.0})
        teacher = tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
        # The scalar counts for every example.
        np.testing.assert_allclose(loss(teacher, teacher + 0.5), [1.0, 1.0, 1.0])
        assert losses.serialize(loss) == {"name": "test_mean_gap", "scale": 2.0}
    finally:
        registry._REGISTRY.pop("test_mean_gap", None)
    assert "test_mean_gap" not in losses.names()


def test_base_class_requires_call_or_compute_loss():
    class Empty(losses.DistillationLoss):
        pass

    with pytest.raises(
        NotImplementedError, match=r"Empty must implement `call`.*or `compute_loss`"
    ):
        Empty()(tf.zeros([2, 3]), tf.zeros([2, 3]))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_loss_takes_a_teacher_in_its_constructor_and_config(name):
    cls, arguments = EXPECTED[name]
    loss = cls(**arguments, teacher="t1")
    assert loss.teacher == "t1"
    assert loss.get_config()["teacher"] == "t1"
    assert cls().teacher is None and "teacher" not in cls().get_config()
    restored = losses.get(json.loads(json.dumps(losses.serialize(loss))))
    assert type(restored) is cls and restored.teacher == "t1"
    assert restored.get_config() == loss.get_config()
    # A config dict names the teacher, by name or index.
    by_index = losses.get({"name": name, **arguments, "teacher": 1})
    assert by_index.teacher == 1 and by_index.get_config()["teacher"] == 1
    # Setting it after construction still works, and reaches the config.
    late = cls(**arguments)
    late.teacher = "t2"
    assert late.get_config()["teacher"] == "t2"
    # The Keras serialization path keeps it too.
    keras_config = keras.saving.serialize_keras_object(loss)
    assert keras.saving.deserialize_keras_object(keras_config).teacher == "t1"


# The package's own losses (the catalog the command lists): other test files
# register losses of their own, which the registry then also holds.
@pytest.mark.parametrize("name", sorted(catalog.LOSSES))
def test_every_loss_signature_shows_teacher(name):
    cls = registry._REGISTRY[name][0]
    parameters = inspect.signature(cls).parameters
    assert "teacher" in parameters and parameters["teacher"].default is None
    assert list(parameters)[-1] == "teacher"
    # The constructor and config are as written, not wrappers the base class made.
    assert not hasattr(cls.__init__, "__wrapped__")
    assert not hasattr(cls.get_config, "__wrapped__")
    assert "__init_subclass__" not in vars(losses.DistillationLoss)


def test_a_user_loss_without_teacher_gets_it_from_a_config():
    @register_serializable()
    class ScaledGap(losses.DistillationLoss):
        """A keras.distillation-style loss: no `teacher` in `__init__`."""

        def __init__(self, scale=1.0):
            self.scale = scale

        def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
            return self.scale * tf.reduce_mean(tf.abs(teacher_outputs - student_outputs))

        def get_config(self):
            return {"scale": self.scale}

    # The class is left as written: its constructor does not take `teacher`.
    assert list(inspect.signature(ScaledGap).parameters) == ["scale"]
    with pytest.raises(TypeError):
        ScaledGap(teacher="resnet")
    assert ScaledGap().teacher is None

    restored = ScaledGap.from_config({"scale": 2.0, "teacher": "resnet"})
    assert (restored.scale, restored.teacher) == (2.0, "resnet")
    with pytest.raises(ValueError, match=r"Invalid value for argument `teacher`"):
        ScaledGap.from_config({"teacher": -1})
    try:
        losses.register("test_scaled_gap", "Scaled absolute gap (test only)")(ScaledGap)
        loss = losses.get({"name": "test_scaled_gap", "scale": 2.0, "teacher": "resnet"})
        assert type(loss) is ScaledGap and (loss.scale, loss.teacher) == (2.0, "resnet")
        assert losses.get("test_scaled_gap", teacher=1).teacher == 1
        # Serialized, the teacher is kept although its `get_config` omits it.
        config = losses.serialize(loss)
        assert config == {"name": "test_scaled_gap", "scale": 2.0, "teacher": "resnet"}
        assert losses.get(json.loads(json.dumps(config))).teacher == "resnet"
        # A misspelt argument lists `teacher` among the valid ones.
        with pytest.raises(ValueError, match=r"Valid arguments: \['scale', 'teacher'\]"):
            losses.get({"name": "test_scaled_gap", "teachr": "resnet"})
    finally:
        registry._REGISTRY.pop("test_scaled_gap", None)
    # Unregistered, through Keras serialization.
    keras_config = losses.serialize(ScaledGap.from_config({"teacher": "vit"}))
    assert keras_config["config"] == {"scale": 1.0, "teacher": "vit"}
    restored = losses.get(json.loads(json.dumps(keras_config)))
    assert type(restored) is ScaledGap and restored.teacher == "vit"
    assert keras.saving.deserialize_keras_object(keras_config).teacher == "vit"


# Classes renamed to the one `*Distillation` form: former name -> registry name.
FORMER_NAMES = {
    "AttentionTransfer": "attention_transfer",
    "CTKD": "ctkd",
    "DIST": "dist",
    "DecoupledKD": "dkd",
    "FitNets": "fitnets",
    "PKT": "pkt",
    "RKDAngle": "rkd_angle",
    "RKDDistance": "rkd_distance",
    "SimilarityPreserving": "similarity_preserving",
}


def test_every_loss_class_name_ends_in_distillation():
    for name, class_name, _ in losses.describe():
        if name not in catalog.LOSSES:
            continue  # Registered by another test file.
        assert class_name.endswith("Distillation"), (name, class_name)
        assert class_name in losses.__all__


@pytest.mark.parametrize("former_name", sorted(FORMER_NAMES))
def test_a_former_class_name_still_constructs_and_deserializes(former_name):
    cls = registry._REGISTRY[FORMER_NAMES[former_name]][0]
    former = getattr(losses, former_name)
    assert former is cls and former_name in losses.__all__
    assert getattr(importlib.import_module(cls.__module__), former_name) is cls
    loss = former(teacher="t1")
    assert type(loss) is cls and loss.get_config() == cls(teacher="t1").get_config()
    # A Keras config saved under the former class name, as tf_distill wrote it.
    saved = {
        "module": cls.__module__,
        "class_name": former_name,
        "config": loss.get_config(),
        "registered_name": f"tf_distill>{former_name}",
    }
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(saved)))
    assert type(restored) is cls and restored.get_config() == loss.get_config()
    assert type(losses.get(saved)) is cls
    # New configs carry the new name.
    assert keras.saving.serialize_keras_object(loss)["class_name"] == cls.__name__


def test_configs_saved_under_former_names_load():
    # Written by tf_distill before the rename (`keras.saving.serialize_keras_object`).
    saved = [
        '{"module": "tf_distill.losses.ctkd", "class_name": "CTKD", "config": {"lambda_max": '
        '1.0, "curriculum_epochs": 5, "min_temperature": 1.0, "temperature_range": 20.0, '
        '"initial_temperature": null, "teacher": "resnet"}, "registered_name": "tf_distill>CTKD"}',
        '{"module": "tf_distill.losses.relations", "class_name": "PKT", "config": '
        '{"teacher_layer_name": "emb", "student_layer_name": "emb"}, "registered_name": '
        '"tf_distill>PKT"}',
        '{"module": "tf_distill.losses.logit_methods", "class_name": "DecoupledKD", "config": '
        '{"alpha": 1.0, "beta": 2.0, "temperature": 4.0}, "registered_name": '
        '"tf_distill>DecoupledKD"}',
    ]
    ctkd, pkt, dkd = (keras.saving.deserialize_keras_object(json.loads(s)) for s in saved)
    assert type(ctkd) is losses.CurriculumTemperatureDistillation
    assert (ctkd.curriculum_epochs, ctkd.teacher) == (5, "resnet")
    assert type(pkt) is losses.ProbabilisticTransferDistillation
    assert pkt.teacher_layer_name == "emb"
    assert type(dkd) is losses.DecoupledDistillation and dkd.beta == 2.0


@pytest.mark.parametrize("teacher", [True, -1, 1.5, ["t1"]])
def test_an_invalid_teacher_is_refused(teacher):
    with pytest.raises(ValueError, match=r"Invalid value for argument `teacher`.*Received: teacher="):
        losses.LogitsDistillation(teacher=teacher)
    with pytest.raises(ValueError, match=r"Invalid value for argument `teacher`"):
        losses.get({"name": "dkd", "teacher": teacher})


def test_get_takes_keyword_arguments_like_a_config():
    hint = losses.get("fitnets", teacher_layer_name="block_2", student_layer_name="block_1")
    assert type(hint) is losses.FitNetsDistillation
    assert (hint.teacher_layer_name, hint.student_layer_name) == ("block_2", "block_1")
    kd = losses.get("kd", temperature=4.0, teacher="resnet")
    assert (kd.temperature, kd.teacher) == (4.0, "resnet")
    # Keywords complete (and override) a config dict.
    kd = losses.get({"name": "kd", "temperature": 2.0}, temperature=8.0)
    assert kd.temperature == 8.0
    with pytest.raises(ValueError, match=r"Invalid arguments for distillation loss 'fitnets'"):
        losses.get("fitnets", temperature=2.0)
    with pytest.raises(ValueError, match=r"Keyword arguments to `get` need a loss name"):
        losses.get(losses.LogitsDistillation(), temperature=2.0)


def test_describe_loss_gives_arguments_defaults_and_paper():
    kd = losses.describe_loss("kd")
    assert kd["name"] == "kd" and kd["class_name"] == "LogitsDistillation"
    assert kd["arguments"] == {
        "temperature": 3.0, "loss": "kl_divergence", "beta": 0.5,
        "standardize": False, "teacher": None,
    }
    assert kd["paper"] == "Hinton et al. 2015"
    assert kd["description"].startswith("Soft-label distillation")
    assert losses.describe_loss("dkd")["paper"] == "Zhao et al., CVPR 2022"
    assert losses.describe_loss(" RKD_Angle ")["paper"] == "Park et al., CVPR 2019"
    # Feature matching as keras.distillation does it is from no one paper.
    assert losses.describe_loss("feature")["paper"] is None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_describe_loss_agrees_with_the_default_loss(name):
    described = losses.describe_loss(name)
    default = losses.get(name).get_config()
    assert {k: v for k, v in described["arguments"].items() if k in default} == default
    # The example config builds the default loss.
    assert described["example"]["name"] == name
    assert losses.get(described["example"]).get_config() == default


def test_describe_loss_reads_the_recipe_when_there_is_one(tmp_path):
    assert losses.describe_loss("kd", recipes_dir=tmp_path)["recipe"] is None
    assert losses.describe_loss("kd", recipes_dir=tmp_path)["recipe_text"] is None
    recipe = tmp_path / "kd.yaml"
    recipe.write_text("distillation:\n  losses: [{name: kd, temperature: 4.0}]\n")
    described = losses.describe_loss("kd", recipes_dir=tmp_path)
    assert described["recipe"] == str(recipe)
    assert described["recipe_text"] == recipe.read_text()
    assert losses.describe_loss("dkd", recipes_dir=tmp_path)["recipe"] is None


def test_recipes_are_looked_for_in_the_package():
    package = os.path.dirname(os.path.abspath(tf_distill.__file__))
    assert os.path.samefile(str(catalog.RECIPES_DIR), os.path.join(package, "recipes"))


def test_describe_loss_of_an_unknown_name_lists_the_names_and_the_closest():
    with pytest.raises(ValueError) as error:
        losses.describe_loss("rkd_angel")
    message = str(error.value)
    assert message.startswith(f"Unknown distillation loss. Expected one of {losses.names()}.")
    assert message.endswith("Received: 'rkd_angel'. Did you mean 'rkd_angle'?")
    with pytest.raises(ValueError) as error:
        losses.describe_loss("zzzzzz")
    assert "Did you mean" not in str(error.value)


@pytest.mark.slow
def test_the_catalog_the_command_lists_equals_the_live_registry():
    # In a fresh interpreter: test modules register losses of their own here.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = (
        "from tf_distill import catalog, losses\n"  # importing losses runs check_catalog
        "assert catalog.describe_losses() == losses.describe(), losses.describe()\n"
        "print(len(catalog.LOSSES))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=root, env={**os.environ, "PYTHONPATH": root}, check=False)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 10


def test_a_catalog_that_drifted_from_the_registry_is_refused(monkeypatch):
    from tf_distill import catalog

    drifted = dict(catalog.LOSSES)
    drifted["kd"] = ("LogitsDistillation", "an old summary")
    monkeypatch.setattr(catalog, "LOSSES", drifted)
    with pytest.raises(RuntimeError, match="differs from the loss registry.*an old summary"):
        registry.check_catalog()


@pytest.mark.parametrize("name", sorted(catalog.LOSSES))
def test_the_catalog_describes_a_loss_as_its_class_does(name):
    # What `tf-distill losses NAME` prints without TensorFlow.
    assert catalog.describe_loss(name) == losses.describe_loss(name)
    assert catalog.describe_loss(f" {name.upper()} ") == losses.describe_loss(name)


def test_the_catalog_refuses_an_unknown_name_with_the_closest():
    with pytest.raises(ValueError) as error:
        catalog.describe_loss("rkd_angel")
    assert str(error.value) == (
        f"Unknown distillation loss. Expected one of {sorted(catalog.LOSSES)}. "
        "Received: 'rkd_angel'. Did you mean 'rkd_angle'?"
    )


def test_catalog_details_that_drifted_from_a_class_are_refused(monkeypatch):
    # The built-in losses only: other test files register losses of their own.
    built_in = {name: registry._REGISTRY[name] for name in catalog.LOSSES}
    monkeypatch.setattr(registry, "_REGISTRY", built_in)
    registry.check_catalog()
    description, arguments = catalog.DETAILS["kd"]
    drifted = {**catalog.DETAILS, "kd": (description, {**arguments, "temperature": 2.0})}
    monkeypatch.setattr(catalog, "DETAILS", drifted)
    with pytest.raises(RuntimeError, match=r"catalog.DETAILS` differs .*\['kd'\]"):
        registry.check_catalog()


def test_a_misspelt_argument_lists_the_valid_ones_and_the_closest():
    with pytest.raises(ValueError) as error:
        losses.get({"name": "kd", "temprature": 4.0})
    message = str(error.value)
    assert "distillation loss 'kd': unknown argument(s) ['temprature']" in message
    assert "'temperature', 'loss', 'beta', 'standardize', 'teacher'" in message
    assert "Did you mean 'temperature'? Received: {'temprature': 4.0}" in message
    assert "unexpected keyword" not in message
    with pytest.raises(ValueError, match="Did you mean 'temperature' for 'temprature', "
                                         "'beta' for 'bta'"):
        losses.get("kd", temprature=4.0, bta=1.0)

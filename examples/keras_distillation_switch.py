"""A `keras.distillation` program, switched to tf_distill by its import line alone.

This program was written for Keras's own distillation API. To run it on
tf_distill, only the import changes:

    from keras.distillation import Distiller, LogitsDistillation, FeatureDistillation
    from tf_distill import Distiller, LogitsDistillation, FeatureDistillation

Everything else (models, the `Distiller(...)` call with a logits loss and a
named-layer feature loss, `compile`, `fit`, the history's keys) stays as it is.
`tests/test_examples.py` runs this file with each of the two lines and checks
that both train.

What changes is what happens inside: tf_distill runs the student once per
step even when a layer is tapped (keras.distillation runs it a second time
for the features), and `LogitsDistillation`'s default `"kl_divergence"` is
the KL divergence between `softmax(teacher / T)` and `softmax(student / T)`,
times `T²` (keras.distillation applies the string-named `kl_divergence` to
the raw scaled logits, without a softmax).

Data: scikit-learn's bundled 8×8 digits, so it runs anywhere.

Usage:

    python examples/keras_distillation_switch.py [--fast]

The last line printed is a JSON object: the distiller's class, the history's
keys and the student's test accuracy.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

# The only line that differs from the keras.distillation version of this program
# (kept on one line, as users write it, hence isort off):
# isort: off
from tf_distill import Distiller, LogitsDistillation, FeatureDistillation  # noqa: E402
# isort: on


def load_data(seed=0):
    """sklearn's digits as `[n, 8, 8, 1]` floats in [0, 1], split 80/20 at random."""
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., np.newaxis]
    y = digits.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    return x[:split], y[:split], x[split:], y[split:]


def make_teacher():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu", name="features")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="teacher")


def make_student():
    # The same width at "features" as the teacher: FeatureDistillation
    # compares the two layers' outputs directly.
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(64, activation="relu", name="features")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="student")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="1 epoch each")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    if args.fast:
        args.teacher_epochs = args.epochs = 1
    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = load_data()

    teacher = make_teacher()
    teacher.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    teacher.fit(x_train, y_train, epochs=args.teacher_epochs, batch_size=32, verbose=0)
    teacher_accuracy = teacher.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]

    distiller = Distiller(
        teacher=teacher,
        student=make_student(),
        distillation_losses=[
            LogitsDistillation(temperature=3.0),
            FeatureDistillation(
                loss="mse", teacher_layer_name="features", student_layer_name="features"
            ),
        ],
        distillation_loss_weights=[1.0, 0.1],
        student_loss_weight=0.5,
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = distiller.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0)
    for key, values in sorted(history.history.items()):
        print(f"{key}: {values[-1]:.4f}")

    logits = distiller.student.predict(x_test, verbose=0)
    test_accuracy = float(np.mean(np.argmax(logits, axis=-1) == y_test))
    print(
        json.dumps(
            {
                "example": "keras_distillation_switch",
                "distiller": f"{Distiller.__module__}.{Distiller.__name__}",
                "tf_distill_imported": "tf_distill" in sys.modules,
                "history_keys": sorted(history.history),
                "final_loss": float(history.history["loss"][-1]),
                "teacher_accuracy": round(float(teacher_accuracy), 4),
                "test_accuracy": round(test_accuracy, 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Bring your own models: a keras.applications teacher, your own student, FitNets + KD, int8.

Nothing here is built into tf_distill: the teacher is a `keras.applications`
MobileNetV2 (`weights=None`, so nothing downloads; it is trained here), the
student is a small CNN of a different architecture, and the two are tied by

- FitNets hints (Romero et al., 2015) between two *named* layers of
  different shapes: the teacher's `block_5_add` (4×4×16 on 32×32 inputs) and
  the student's `student_block2` (8×8×32). The Distiller builds the trainable
  regressor that maps one onto the other (average-pooled to 4×4, a 1×1
  convolution to 16 channels); it trains with the student and is never part
  of the saved or exported student;
- KD on the logits (Hinton et al., 2015), temperature 4.

Then the student alone is saved and exported to LiteRT with full int8
quantization, verified against the Keras model on the test data.

Data:

- default: CIFAR-10 through `tf_distill.data.load("keras:cifar10")`, which
  reads Keras's copy in `~/.keras/datasets` (`$KERAS_HOME/datasets`) and
  downloads it (170 MB) the first time; without a network and without that
  copy, the example stops with one line that says where it looked.
- `--data SOURCE`: any `tf_distill.data.load` source of 32×32×3 images, such
  as a `.npz` with `x_train`, `y_train`, `x_test`, `y_test`.
- `--fast`: a small synthetic 32×32×3 data set (ten noisy class prototypes),
  an untrained teacher and one epoch of a few batches of distillation: the
  whole path in well under a minute, for the tests.

Usage:

    python examples/bring_your_own_model.py           # CIFAR-10, minutes on a CPU
    python examples/bring_your_own_model.py --data cifar10.npz
    python examples/bring_your_own_model.py --fast    # synthetic data, seconds

The last line printed is a JSON object with what was trained and exported.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_distill  # noqa: E402
import tf_distill.data  # noqa: E402

CIFAR10 = "keras:cifar10"
# The two layers FitNets ties together, by name.
TEACHER_HINT_LAYER = "block_5_add"
STUDENT_GUIDED_LAYER = "student_block2"


def make_teacher(num_classes):
    """MobileNetV2 at width 0.35 on 32×32×3, logits out, random initial weights."""
    return keras.applications.MobileNetV2(
        input_shape=(32, 32, 3),
        alpha=0.35,
        weights=None,
        classes=num_classes,
        classifier_activation=None,  # A Distiller's models output logits.
    )


def make_student(num_classes):
    """A small plain CNN: another architecture than the teacher's, 20× fewer parameters."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(name="student_block1")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(name=STUDENT_GUIDED_LAYER)(x)  # 8×8×32
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def synthetic_data(seed=0, train=512, test=128, num_classes=10):
    """Ten smooth random class prototypes with noise: learnable in a few batches."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((num_classes, 8, 8, 3)).repeat(4, axis=1).repeat(4, axis=2)

    def draw(count):
        labels = np.arange(count) % num_classes
        images = 0.7 * prototypes[labels] + 0.3 * rng.random((count, 32, 32, 3))
        return images.astype("float32"), labels

    x_train, y_train = draw(train)
    x_test, y_test = draw(test)
    return tf_distill.data.from_arrays(
        x_train, y_train, x_test=x_test, y_test=y_test, validation_size=64,
        num_classes=num_classes, name="synthetic 32×32×3",
    )


def load_data(source):
    """CIFAR-10 (or `source`) through tf_distill.data, or one line that says why not."""
    try:
        data = tf_distill.data.load(source, validation_size=0.1)
    except Exception as error:  # noqa: BLE001 — any failure to fetch means the same to the user.
        reason = f"{type(error).__name__}: {' '.join(str(error).split())}"
        if source != CIFAR10:
            stop(f"--data {source}: {reason}")
        keras_home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
        folder = os.path.join(keras_home, "datasets", "cifar-10-batches-py")
        stop(
            f"CIFAR-10 is not available here: no copy in {folder} and the download "
            f"(170 MB) failed ({reason}). Point --data at a .npz of 32×32×3 images "
            "(x_train, y_train, x_test, y_test), or run with --fast (synthetic data, "
            "no download)."
        )
    if tuple(data.input_shape) != (32, 32, 3):
        stop(f"--data {source}: the models here take 32×32×3 images. "
             f"Received: input_shape={tuple(data.input_shape)}")
    return data


def stop(message):
    """Ends the example with one line on stderr and exit status 2: no traceback."""
    print(f"{os.path.basename(__file__)}: {message}", file=sys.stderr)
    sys.exit(2)


def accuracy(model, x, y):
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true",
                        help="synthetic data, one epoch of a few batches")
    parser.add_argument("--data", default=CIFAR10,
                        help="a tf_distill.data.load source of 32×32×3 images "
                             "(default: %(default)s)")
    parser.add_argument("--output", default="runs/bring_your_own_model",
                        help="folder for student.keras and the .tflite (default: %(default)s)")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    data = synthetic_data() if args.fast else load_data(args.data)
    teacher_epochs, epochs, batch_size = (0, 1, 64) if args.fast else (15, 15, 128)
    steps = 4 if args.fast else None  # A few batches in --fast.
    print(f"Data: {data.name}: {len(data.x_train)} train, {len(data.x_test)} test, "
          f"input {data.input_shape}")

    teacher = make_teacher(data.num_classes)
    if not teacher_epochs:
        # Tracing the training step of MobileNetV2's 156 layers costs more than
        # the rest of --fast together; distillation takes the same path from an
        # untrained teacher.
        print(f"Teacher: {teacher.name}, {teacher.count_params():,} parameters, "
              "untrained in --fast")
    else:
        teacher.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        print(f"Training the teacher ({teacher.name}, {teacher.count_params():,} parameters)")
        teacher.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=teacher_epochs,
                    validation_data=(data.x_val, data.y_val), verbose=2)

    student = make_student(data.num_classes)
    distiller = tf_distill.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=[
            tf_distill.losses.get("kd", temperature=4.0),
            tf_distill.losses.get(
                "fitnets",
                teacher_layer_name=TEACHER_HINT_LAYER,
                student_layer_name=STUDENT_GUIDED_LAYER,
            ),
        ],
        distillation_loss_weights=[1.0, 0.5],
        student_loss_weight=0.5,
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",  # From logits, in tf_distill.
        metrics=["accuracy"],
    )
    print(f"Distilling into the student ({student.name}, {student.count_params():,} "
          f"parameters): KD + FitNets {TEACHER_HINT_LAYER} → {STUDENT_GUIDED_LAYER}")
    history = distiller.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs,
                            steps_per_epoch=steps, validation_data=(data.x_val, data.y_val),
                            verbose=2)

    os.makedirs(args.output, exist_ok=True)
    student_path = os.path.join(args.output, "student.keras")
    distiller.student.save(student_path)  # The student alone: no teacher, no regressor.
    tflite_path = os.path.join(args.output, "student_int8.tflite")
    report = tf_distill.export_litert(
        distiller,  # Only its student is exported.
        tflite_path,
        quantization="int8",
        representative_data=data.x_train[:200],
        validation_data=(data.x_test, data.y_test),
        # A student trained for a few batches is no quantization benchmark: in
        # --fast the check still runs and reports the drop, but does not refuse.
        max_accuracy_drop=100.0 if args.fast else 1.0,
        latency_runs=10 if args.fast else 200,
        report_path=os.path.join(args.output, "export.md"),
    )
    print(report.to_markdown())

    hint_shapes = {
        "teacher": list(teacher.get_layer(TEACHER_HINT_LAYER).output.shape[1:]),
        "student": list(student.get_layer(STUDENT_GUIDED_LAYER).output.shape[1:]),
    }
    print(json.dumps({
        "example": "bring_your_own_model",
        "data": data.name,
        "input_shape": list(data.input_shape),
        "teacher": teacher.name,
        "teacher_parameters": int(teacher.count_params()),
        "student_parameters": int(student.count_params()),
        "fitnets_shapes": hint_shapes,
        "history_keys": sorted(history.history),
        "final_loss": float(history.history["loss"][-1]),
        "teacher_trained": not args.fast,
        "teacher_accuracy": None if args.fast else accuracy(teacher, data.x_test, data.y_test),
        "student_accuracy": accuracy(distiller.student, data.x_test, data.y_test),
        "student_path": student_path,
        "tflite_path": tflite_path,
        "tflite_bytes": os.path.getsize(tflite_path),
        "quantization": report.quantization,
        "litert_accuracy": report.litert_accuracy,
        "keras_accuracy": report.keras_accuracy,
    }))


if __name__ == "__main__":
    main()

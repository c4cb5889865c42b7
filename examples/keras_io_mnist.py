"""The keras.io "Knowledge Distillation" example, run with `tf_distill.Distiller`.

The keras.io example (Kenneth Borup, https://keras.io/examples/vision/knowledge_distillation/)
defines its own `Distiller(keras.Model)` class and then calls

    distiller = Distiller(student=student, teacher=teacher)
    distiller.compile(optimizer, metrics, student_loss_fn, distillation_loss_fn,
                      alpha=0.1, temperature=10)

`tf_distill.Distiller` accepts exactly that construction and `compile` call, so
the example's code below is the keras.io code with the class definition
replaced by `from tf_distill import Distiller`. Models, optimizer, losses,
`alpha` and `temperature` are the example's; a student trained from scratch
is the comparison, as there.

Data:

- `--data mnist` (the default): real MNIST. From the idx files in
  `../shared/data/mnist` (from the current folder, or next to the repository)
  when that folder exists (read with `tf_distill.data.load`), otherwise from
  `keras.datasets.mnist.load_data()`, which downloads it once into
  `~/.keras/datasets` (the keras.io example's own path; needs internet).
  Without either, the example stops with one line that says where it looked:
  point `--data` at your copy, or use `--data digits`.
- `--data digits`: scikit-learn's bundled 8×8 digits, which need no download,
  so the example runs anywhere.
- Any other source `tf_distill.data.load` accepts: an idx folder, a `.npz`
  file, `tfds:mnist`, `keras:fashion_mnist`.

Usage:

    python examples/keras_io_mnist.py                 # as on keras.io: 5 + 3 + 3 epochs
    python examples/keras_io_mnist.py --data digits
    python examples/keras_io_mnist.py --fast          # 1 epoch each on a small subset

The last line printed is a JSON object with the three test accuracies.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import layers  # noqa: E402

import tf_distill.data  # noqa: E402
from tf_distill import Distiller  # noqa: E402  (keras.io: `class Distiller(keras.Model)`)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The shared copy of MNIST sits next to the repository: `../shared/data/mnist`.
SHARED_MNIST = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "mnist")

# --fast: enough examples that one epoch beats chance, few enough for a test.
FAST_TRAIN_SIZE = 1000
FAST_TEST_SIZE = 500


def local_mnist_folder():
    """`../shared/data/mnist`, from the current directory or the repository, or None."""
    for folder in (os.path.join("..", "shared", "data", "mnist"), SHARED_MNIST):
        if os.path.isfile(os.path.join(folder, "train-images-idx3-ubyte.gz")):
            return folder
    return None


def load_data(source, train_size=None, test_size=None, seed=0):
    """Returns `(x_train, y_train, x_test, y_test, name)`, images `[n, h, w, 1]` in [0, 1].

    The whole training split is used for training (no validation split), as
    on keras.io; `train_size` and `test_size` keep stratified subsets.
    """
    options = {"validation_size": 0, "train_size": train_size, "test_size": test_size, "seed": seed}
    if source == "mnist":
        folder = local_mnist_folder()
        if folder is None:
            # The keras.io path: downloads MNIST once into ~/.keras/datasets.
            try:
                (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
            except Exception as error:  # noqa: BLE001 — any failure to fetch means the same.
                looked = dict.fromkeys(
                    [os.path.abspath(os.path.join("..", "shared", "data", "mnist")), SHARED_MNIST]
                )
                stop(
                    "MNIST is not available here: no idx files in ../shared/data/mnist "
                    f"({' nor '.join(looked)}) and the download failed ({one_line(error)}). "
                    "Point --data at a folder of MNIST idx files or a .npz "
                    "(--data ~/data/mnist), or run with --data digits (bundled, no download)."
                )
            splits = tf_distill.data.from_arrays(
                x_train, y_train, x_test=x_test, y_test=y_test, name="mnist", **options
            )
            return splits.x_train, splits.y_train, splits.x_test, splits.y_test, splits.name
        source = folder
    try:
        splits = tf_distill.data.load(source, **options)
    except Exception as error:  # noqa: BLE001 — a wrong path or a failed download alike.
        stop(f"--data {source}: {one_line(error)}")
    return splits.x_train, splits.y_train, splits.x_test, splits.y_test, splits.name


def one_line(error):
    """`Type: message` of an exception, on one line."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def stop(message):
    """Ends the example with one line on stderr and exit status 2: no traceback."""
    print(f"{os.path.basename(__file__)}: {message}", file=sys.stderr)
    sys.exit(2)


def make_teacher(input_shape, num_classes):
    """The keras.io teacher: two wide strided convolutions and a Dense head (logits)."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(256, (3, 3), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.MaxPooling2D(pool_size=(2, 2), strides=(1, 1), padding="same"),
            layers.Conv2D(512, (3, 3), strides=(2, 2), padding="same"),
            layers.Flatten(),
            layers.Dense(num_classes),
        ],
        name="teacher",
    )


def make_student(input_shape, num_classes):
    """The keras.io student: the teacher's shape at 1/16 of the width."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(16, (3, 3), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.MaxPooling2D(pool_size=(2, 2), strides=(1, 1), padding="same"),
            layers.Conv2D(32, (3, 3), strides=(2, 2), padding="same"),
            layers.Flatten(),
            layers.Dense(num_classes),
        ],
        name="student",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data",
        default="mnist",
        help="'mnist' (default), 'digits', or any tf_distill.data.load source",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help=f"1 epoch each on {FAST_TRAIN_SIZE} training and {FAST_TEST_SIZE} test examples",
    )
    parser.add_argument("--teacher-epochs", type=int, default=5)
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="epochs of distillation and of the student from scratch",
    )
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.fast:
        args.teacher_epochs = args.epochs = 1
        if args.train_size is None and args.data != "digits":
            args.train_size = FAST_TRAIN_SIZE
    test_size = FAST_TEST_SIZE if args.fast and args.data != "digits" else None

    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test, name = load_data(
        args.data, train_size=args.train_size, test_size=test_size, seed=args.seed
    )
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    print(
        f"Data: {name}, {len(x_train)} train and {len(x_test)} test images of "
        f"shape {x_train.shape[1:]}"
    )
    verbose = 2 if sys.stdout.isatty() else 0

    # From here on, the keras.io example.
    teacher = make_teacher(x_train.shape[1:], num_classes)
    student = make_student(x_train.shape[1:], num_classes)
    # Clone the student for later comparison.
    student_scratch = keras.models.clone_model(student)

    # Train the teacher as usual.
    teacher.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    teacher.fit(x_train, y_train, epochs=args.teacher_epochs, verbose=verbose)
    teacher_metrics = teacher.evaluate(x_test, y_test, verbose=0, return_dict=True)
    print(f"Teacher: {teacher_metrics}")

    # Initialize and compile the distiller.
    distiller = Distiller(student=student, teacher=teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=0.1,
        temperature=10,
    )
    # Distill the teacher into the student.
    history = distiller.fit(x_train, y_train, epochs=args.epochs, verbose=verbose)
    distilled_metrics = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)
    print(f"Distilled student: {distilled_metrics}")

    # Train the student from scratch, for comparison.
    student_scratch.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    student_scratch.fit(x_train, y_train, epochs=args.epochs, verbose=verbose)
    scratch_metrics = student_scratch.evaluate(x_test, y_test, verbose=0, return_dict=True)
    print(f"Student from scratch: {scratch_metrics}")

    accuracy = "sparse_categorical_accuracy"
    print(
        json.dumps(
            {
                "example": "keras_io_mnist",
                "data": name,
                "train_examples": int(len(x_train)),
                "test_examples": int(len(x_test)),
                "history_keys": sorted(history.history),
                "teacher_accuracy": round(float(teacher_metrics[accuracy]), 4),
                "distilled_student_accuracy": round(float(distilled_metrics[accuracy]), 4),
                "student_from_scratch_accuracy": round(float(scratch_metrics[accuracy]), 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

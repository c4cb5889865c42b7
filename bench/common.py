"""Shared helpers of the benchmarks: data, timing, and `docs/BENCHMARKS.md`.

Every benchmark script in `bench/` uses these, so that all figures are taken
the same way:

- `load_mnist` reads real MNIST from the idx files in `../shared/data/mnist`
  (resolved from the current directory, then from the repository) through
  `tf_distill.data.load`.
- Times are wall-clock seconds from `time.perf_counter`. `interleave` runs
  the compared variants in turn, one repetition of each before the next
  repetition of any, so that a slow spell of a shared machine hits every
  variant rather than one; report medians (`summarize`).
- `EpochTimer` and `PredictTimer` time the training epochs and prediction
  passes Keras itself runs, excluding the set-up of `fit` and `predict`.
- Students are trained with `adam`: Adam whose learning rate decays to 0
  over the run, so every model ends on settled weights.
- Results over seeds are judged by `tf_distill.comparison` (mean ± std, the
  paired differences and the verdict), the same code as the run report.
- `write_section` adds or replaces one named section of
  `docs/BENCHMARKS.md` without touching the others, atomically and under a
  lock, so several benchmarks can write their figures into one file.
"""

import contextlib
import datetime
import hashlib
import json
import os
import platform
import re
import shlex
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The same table renderer as the run reports (re-exported for the scripts).
from tf_distill.commands.report import markdown_table  # noqa: E402, F401

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS_PATH = os.path.join(REPO_ROOT, "docs", "BENCHMARKS.md")
MNIST_ENV = "TF_DISTILL_MNIST"
# Relative to the repository root (and to the current directory, which is
# the repository root when benchmarks are run as documented).
DEFAULT_MNIST = os.path.join("..", "shared", "data", "mnist")

BENCHMARKS_INTRO = """\
# Benchmarks

Figures measured by the scripts in `bench/`, each section written by its
script (`bench/common.py:write_section`) together with the exact command that
reproduces it and the conditions it ran under. Times are wall-clock medians of
interleaved repetitions (each variant runs once per repetition, in turn), after
a warm-up that absorbs graph tracing. Absolute times depend on the machine and
its load; the ratios between variants measured side by side are the figures
to compare.
"""

_SECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ----------------------------------------------------------------------
# Data.


def mnist_folder(path=None):
    """The folder of MNIST idx files to use, as an absolute path, or None.

    Uses `path` when given (and raises if it holds no MNIST), else
    `$TF_DISTILL_MNIST`, else `../shared/data/mnist` from the current
    directory, then from the repository root.
    """

    def holds_mnist(folder):
        return os.path.isdir(folder) and any(
            name.startswith("train-images") for name in os.listdir(folder)
        )

    if path:
        folder = os.path.abspath(os.path.expanduser(path))
        if not holds_mnist(folder):
            raise FileNotFoundError(f"No MNIST idx files in '{folder}'. Received: path={path!r}")
        return folder
    candidates = [DEFAULT_MNIST, os.path.join(REPO_ROOT, DEFAULT_MNIST)]
    if os.environ.get(MNIST_ENV):
        candidates.insert(0, os.environ[MNIST_ENV])
    for candidate in candidates:
        folder = os.path.abspath(os.path.expanduser(candidate))
        if holds_mnist(folder):
            return folder
    return None


def load_mnist(train_size=None, validation_size=0, test_size=None, seed=0, path=None):
    """Real MNIST as `tf_distill.data.DataSplits`.

    Args:
        train_size: Keep a stratified subset of this many training images
            (`None`: all 60,000 less the validation split).
        validation_size: Images carved from the training set for
            validation (default none: benchmarks report test figures).
        test_size: Keep a stratified subset of the 10,000 test images.
        seed: Seed of the subsets.
        path: The idx folder; see `mnist_folder` for the default.

    Raises:
        FileNotFoundError: if no MNIST folder is found.
    """
    folder = mnist_folder(path)
    if folder is None:
        raise FileNotFoundError(
            f"MNIST idx files not found in {DEFAULT_MNIST} (from the current directory or "
            f"the repository) nor in ${MNIST_ENV}. Pass the folder with --data."
        )
    from tf_distill import data

    return data.load(
        folder,
        train_size=train_size,
        validation_size=validation_size,
        test_size=test_size,
        seed=seed,
    )


# ----------------------------------------------------------------------
# Training.


def adam(learning_rate, total_steps):
    """Adam with a cosine decay of `learning_rate` to 0 over `total_steps`.

    Decayed to 0, so that every model ends on a settled set of weights and
    two students compare without the noise of the last large steps. At
    least one step, so that an empty run still builds.
    """
    from tf_distill.backend import keras

    return keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(learning_rate, max(1, int(total_steps)))
    )


def cache_path(folder, prefix, description):
    """`folder/prefix_<digest>.keras`: a file named after `description`, a
    JSON-able dict of everything that shapes the model, so that a changed
    setting trains a new model instead of loading a stale one."""
    text = json.dumps(description, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return os.path.join(folder, f"{prefix}_{digest}.keras")


def cached_model(path, train, name):
    """Loads the model saved at `path`, or trains it once and saves it there.

    Args:
        path: The `.keras` file (see `cache_path`).
        train: A function of no arguments that builds, compiles and fits
            the model and returns it.
        name: What the log lines call the model (`"Hinton teacher"`).

    Returns:
        `(model, info)`; `info` holds the `path`, the `seconds` `train`
        took (None when the model was loaded) and `trained_seconds`, the
        time its training took when it was trained (kept beside the file in
        `path + ".json"`; None if unknown).
    """
    from tf_distill.backend import keras
    from tf_distill.files import atomic_write

    record = path + ".json"
    if os.path.exists(path):
        log(f"{name}: loading {path}")
        trained = None
        if os.path.exists(record):
            with open(record, encoding="utf-8") as handle:
                trained = json.load(handle).get("seconds")
        info = {"path": path, "seconds": None, "trained_seconds": trained}
        return keras.saving.load_model(path), info
    with stopwatch() as clock:
        model = train()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # Written aside, then renamed: a run killed mid-save leaves no broken cache.
    partial = path + f".{os.getpid()}.keras"
    keras.saving.save_model(model, partial)
    os.replace(partial, path)
    atomic_write(record, json.dumps({"seconds": clock["seconds"]}))
    log(f"{name}: trained in {clock['seconds']:.0f} s, cached at {path}")
    info = {"path": path, "seconds": clock["seconds"], "trained_seconds": clock["seconds"]}
    return model, info


def log(message):
    """Prints `message` at once, after the time of day (`[14:03:59] ...`)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------
# Timing.


@contextlib.contextmanager
def stopwatch():
    """Yields a dict whose `"seconds"` is set to the block's wall time on exit.

    Example:

    >>> with stopwatch() as clock:
    ...     work()
    >>> clock["seconds"]
    """
    clock = {"seconds": None}
    start = time.perf_counter()
    try:
        yield clock
    finally:
        clock["seconds"] = time.perf_counter() - start


def _keras_callback_base():
    from tf_distill.backend import keras

    return keras.callbacks.Callback


class EpochTimer(_keras_callback_base()):
    """Records the wall and CPU time of each training epoch.

    From `on_epoch_begin` to `on_epoch_end`: the epoch's steps and its
    iterator, not the set-up `fit` does once per call. `seconds` holds wall
    times; `cpu_seconds` the CPU time of the whole process (all its threads)
    over the same span, which is less sensitive than wall time to other
    programs running on a shared machine.
    """

    def __init__(self):
        super().__init__()
        self.seconds = []
        self.cpu_seconds = []
        self._start = None

    def _begin(self):
        self._start = (time.perf_counter(), time.process_time())

    def _end(self):
        wall, cpu = self._start
        self.seconds.append(time.perf_counter() - wall)
        self.cpu_seconds.append(time.process_time() - cpu)

    def on_epoch_begin(self, epoch, logs=None):
        self._begin()

    def on_epoch_end(self, epoch, logs=None):
        self._end()

    def last(self):
        """`{"wall": seconds, "cpu": seconds}` of the last epoch or pass."""
        return {"wall": self.seconds[-1], "cpu": self.cpu_seconds[-1]}


class PredictTimer(EpochTimer):
    """Records the wall and CPU time of each `predict` loop."""

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_predict_begin(self, logs=None):
        self._begin()

    def on_predict_end(self, logs=None):
        self._end()


def interleave(tasks, repetitions, warmup=1, log=None):
    """Runs each task in turn, `repetitions` times, after `warmup` untimed runs.

    The order rotates each repetition (A B C, B C A, C A B, ...), so that no
    variant always runs first, or always right after the same other one.

    Args:
        tasks: `{name: fn}`; `fn()` runs one repetition and returns its time
            in seconds, or a dict of times (`{"wall": s, "cpu": s}`), so a
            task can time only part of what it does.
        repetitions: Timed runs of each task.
        warmup: Untimed runs of each task first (tracing, caches).
        log: Optional `fn(str)` for progress lines.

    Returns:
        `{name: [time, ...]}`, one entry per timed repetition, in repetition
        order (so `samples[a][i]` and `samples[b][i]` were taken close
        together).
    """

    def describe(value):
        if isinstance(value, dict):
            return ", ".join(f"{key} {seconds:.2f} s" for key, seconds in value.items())
        return f"{value:.2f} s"

    names = list(tasks)
    for index in range(warmup):
        for name in names:
            value = tasks[name]()
            if log:
                log(f"warm-up {index + 1}/{warmup} {name}: {describe(value)}")
    samples = {name: [] for name in names}
    for repetition in range(repetitions):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            value = tasks[name]()
            samples[name].append(value)
            if log:
                log(f"repetition {repetition + 1}/{repetitions} {name}: {describe(value)}")
    return samples


def timed(function):
    """A task for `interleave`: runs `function()` and returns its wall seconds."""

    def task():
        start = time.perf_counter()
        function()
        return time.perf_counter() - start

    return task


def median_times(functions, repetitions, warmup=1):
    """`{name: median wall seconds}` of each of `functions` (`{name: fn}`),
    timed in turn by `interleave` after `warmup` untimed calls each."""
    samples = interleave(
        {name: timed(function) for name, function in functions.items()}, repetitions, warmup
    )
    return {name: statistics.median(values) for name, values in samples.items()}


def summarize(values):
    """`{"median", "min", "max", "n"}` of a list of numbers."""
    values = list(values)
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


# ----------------------------------------------------------------------
# Reporting.


def rows_table(header, rows):
    """A Markdown table of `header` (cells) and `rows` (lists of cells, each
    shown with `str`); `markdown_table` renders dicts by columns instead."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_conditions():
    """What a reader needs to judge the figures: machine, load, versions."""
    import numpy
    import tensorflow as tf

    from tf_distill.backend import keras

    load = current_load()
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores",
        "processor": platform.processor() or platform.machine(),
        "load_average": load,
        "devices": [device.device_type for device in tf.config.list_physical_devices()],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
    }


def conditions_markdown(conditions, load_after=None, note=None):
    """One Markdown paragraph stating the conditions of a run."""
    load = conditions.get("load_average")
    if load is not None:
        load = tuple(load)
    text = (
        f"Measured {conditions['date']} on {conditions['machine']} "
        f"({', '.join(conditions['devices'])}), Python {conditions['python']}, "
        f"TensorFlow {conditions['tensorflow']}, Keras {conditions['keras']}."
    )
    if load is not None:
        text += f" Load average (1, 5, 15 min) at the start: {load}"
        if load_after is not None:
            text += f", at the end: {tuple(load_after)}"
        text += "."
    if note:
        text += " " + note
    return text


def current_load():
    try:
        return tuple(round(value, 2) for value in os.getloadavg())
    except OSError:
        return None


def command_line(argv=None, script=None):
    """The command that reproduces a run, as typed from the repository root."""
    argv = sys.argv if argv is None else argv
    script = script or os.path.relpath(os.path.abspath(argv[0]), REPO_ROOT)
    return shlex.join(["python", script] + list(argv[1:]))


def _markers(name):
    return f"<!-- section: {name} -->", f"<!-- end: {name} -->"


def replace_section(document, name, body):
    """Returns `document` with section `name` set to `body`.

    A section is the text between `<!-- section: NAME -->` and
    `<!-- end: NAME -->`. An existing section is replaced in place; a new
    one is appended at the end. Other sections are left byte for byte.

    Raises:
        ValueError: for an invalid name, or a document whose markers for
            `name` are missing a half or appear twice.
    """
    if not isinstance(name, str) or not _SECTION_NAME.match(name):
        raise ValueError(
            "A section name must be letters, digits, '_', '.' or '-', starting "
            f"with a letter or digit. Received: name={name!r}"
        )
    begin, end = _markers(name)
    block = f"{begin}\n{body.strip()}\n{end}\n"
    begins, ends = document.count(begin), document.count(end)
    if begins == ends == 0:
        if document and not document.endswith("\n"):
            document += "\n"
        if document and not document.endswith("\n\n"):
            document += "\n"
        return document + block
    if begins != 1 or ends != 1 or document.index(begin) > document.index(end):
        raise ValueError(
            f"docs/BENCHMARKS.md has {begins} '{begin}' and {ends} '{end}' "
            "marker(s), out of order or repeated; fix the file by hand."
        )
    start = document.index(begin)
    stop = document.index(end) + len(end)
    if document[stop : stop + 1] == "\n":
        stop += 1
    return document[:start] + block + document[stop:]


@contextlib.contextmanager
def _locked(folder):
    """Holds an exclusive lock on `folder` (POSIX `flock`; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # Windows: writers are rare; the write stays atomic.
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


def write_section(name, body, path=BENCHMARKS_PATH):
    """Adds or replaces section `name` of `docs/BENCHMARKS.md`.

    The file is created with a short introduction if absent. The read,
    change and write happen under a lock on the file's folder, and the new
    file replaces the old with `os.replace`, so two benchmarks writing at
    once both land and a crash never leaves half a file.

    Args:
        name: The section's name (`"core"`), used in its markers.
        body: The section's Markdown, usually starting with a `##` heading.
        path: The file (default `docs/BENCHMARKS.md` of this repository).

    Returns:
        The path written.
    """
    from tf_distill.files import atomic_write

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with _locked(folder):
        document = BENCHMARKS_INTRO
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                document = handle.read()
        atomic_write(path, replace_section(document, name, body))
    return path


def publish(name, markdown, write=True, log=print):
    """Prints a benchmark's section and, unless `write` is false, writes it
    into `docs/BENCHMARKS.md` (see `write_section`)."""
    print(markdown)
    if write:
        path = write_section(name, markdown)
        log(f"Wrote section {name!r} of {os.path.relpath(path, REPO_ROOT)}")


def print_results_json(results):
    """Prints a run's figures as one JSON line (the conditions left out)."""
    import json

    print(json.dumps({k: v for k, v in results.items() if k != "conditions"}, default=float))

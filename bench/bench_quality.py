"""Quality benchmark: does distillation give a better student, beyond the noise?

Four parts, each written to its own section of docs/BENCHMARKS.md as soon
as it finishes (with `--write`), in order of importance:

1. `hinton`: Hinton, Vinyals & Dean (2015) on MNIST: teacher
   784-1200-1200-10 with the paper's regularization (dropout 0.2 / 0.5,
   max-norm, ±2-pixel jitter), 100 epochs of Adam; student 784-800-800-10
   for the same 30 epochs alone and distilled, each on the images as they
   are and on jittered images (the teacher queried on the same shifted
   images), T chosen on 5,000 held-out training images among 3, 8 and 20
   (paper: 67 / 146 / 74 test errors at T = 20). Goal: the distilled
   student closes ≥ 80 % of the gap.
2. `transfer`: the same student alone and distilled on 2 % and 5 %
   stratified subsets. Goal: ≥ 50 % of the gap to the student alone on all
   the data recovered.
3. `methods`: each registered method at its paper's setting and after a
   short search of its weight (chosen on validation), small CNN student,
   against the student alone, with paired verdicts.
4. `unlabeled`: the labeled 2 % plus the rest of MNIST without labels
   (`distiller.fit` on x-only data).
5. `tuning` (optional: `--parts tuning`): on part 2's 2 % subset, a
   10-trial search of `tf_distill.tuning`'s default space against the
   student alone and default KD (`quality_tuning.py`).

Every comparison is paired: within a seed, alone and distilled start from
the same weights and see the same batches. Errors are counts on the test
set, reported per seed and as mean ± std.

Usage (from the repository root):

    python bench/bench_quality.py --quick            # toy scale, minutes, writes nothing
    python bench/bench_quality.py --write --results runs/quality.json   # the documented run
    python bench/bench_quality.py --parts tuning --write   # part 5 (runs/quality_tuning.json)

Teachers are cached under `--cache-dir` (default: a folder in the
temporary directory), so a rerun skips their training; so are every
student run of parts 1–3 (`quality_mnist.Runs`: a student alone is
trained once for all the parts that use it, whatever the teacher) and the
method table's runs (the student alone's too), each under a fingerprint of
what shapes it, and each method row runs in a process of its own
(`quality_methods.run_methods`), two at a time on one core each
(`--row-jobs`). The figures are
saved as JSON (`--results`, default `runs/quality.json`, or
`runs/quality_quick.json` with `--quick`) with the plots beside it.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import quality_methods  # noqa: E402
import quality_mnist  # noqa: E402
import quality_report  # noqa: E402
import quality_tuning  # noqa: E402

from tf_distill.backend import tf  # noqa: E402

PARTS = ("hinton", "transfer", "methods", "unlabeled", "tuning")
# Run when `--parts` is not given; `tuning` is asked for by name.
DEFAULT_PARTS = ("hinton", "transfer", "methods", "unlabeled")
# Method rows run at a time (each in a process of its own, on 1 core of 2).
ROW_JOBS = 2

FULL = {
    "seeds": 3,
    "methods_seeds": 3,
    "hinton": {
        "train_size": None,
        # Held out of the 60,000 training images: T is chosen on them.
        "validation_size": 5000,
        "test_size": None,
        "batch_size": 256,
        # The paper's teacher: dropout 0.2 / 0.5, max-norm, ±2-pixel jitter.
        # Adam: chosen on validation errors over the paper's momentum SGD
        # (47 against 53 at 60 epochs of SGD; docs/BENCHMARKS.md, Quality 1).
        "teacher_epochs": 100,
        "teacher_optimizer": "adam",
        "teacher_learning_rate": 1e-3,
        "teacher_momentum": 0.9,
        "teacher_max_norm": 3.5,
        "teacher_input_dropout": 0.2,
        "teacher_dropout": 0.5,
        "jitter": quality_mnist.JITTER_PIXELS,
        "student_batch_size": 256,
        # The same for alone and distilled; the student alone has settled by then.
        "student_epochs": 30,
        "learning_rate": 1e-3,
        # Parts 1-3 choose among these on the validation images.
        "temperatures": [3.0, 8.0, 20.0],
        # Part 5's default KD.
        "temperature": 20.0,
        "alpha": 0.1,
        "subset_steps": 600,
        "fractions": [0.02, 0.05],
        "unlabeled_fraction": 0.02,
    },
    "methods": {
        "train_size": 4000,
        "validation_size": 5000,
        "test_size": None,
        "batch_size": 128,
        "epochs": 15,
        "learning_rate": 0.01,
        "teacher_epochs": 15,
        "teacher_learning_rate": 0.005,
    },
    "tuning": {
        "fraction": 0.02,
        "validation_size": 5000,
        "tuner": "random",
        "max_trials": 10,
        "passes_per_validation": 5,
        # Half part 2's 600 steps, for the 39 trainings to fit ~20 min.
        "subset_steps": 300,
    },
}

QUICK = {
    "seeds": 2,
    "methods_seeds": 1,
    "hinton": {
        **FULL["hinton"],
        "train_size": 600,
        "validation_size": 200,
        "test_size": 1000,
        "teacher_epochs": 2,
        "student_epochs": 1,
        "temperatures": [4.0, 20.0],
        "subset_steps": 2,
        "fractions": [0.05, 0.1],
        "unlabeled_fraction": 0.05,
    },
    "methods": {
        **FULL["methods"],
        "train_size": 512,
        "validation_size": 256,
        "test_size": 1000,
        "epochs": 1,
        "teacher_epochs": 1,
    },
    "tuning": {
        "fraction": 0.1,
        "validation_size": 200,
        "tuner": "random",
        "max_trials": 3,
        "passes_per_validation": 1,
    },
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy scale: minutes, no docs")
    parser.add_argument(
        "--write", action="store_true", help="write the sections into docs/BENCHMARKS.md"
    )
    parser.add_argument("--results", default=None, help="JSON results file (plots beside it)")
    parser.add_argument(
        "--parts",
        default=",".join(DEFAULT_PARTS),
        help=f"comma-separated subset of {list(PARTS)} (default: all but tuning)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(quality_methods.METHOD_KEYS),
        help="comma-separated method keys for the method table",
    )
    parser.add_argument("--seeds", type=int, default=None, help="paired seeds (default 3)")
    parser.add_argument("--data", default=None, help="MNIST idx folder")
    parser.add_argument(
        "--cache-dir",
        default=os.path.join(tempfile.gettempdir(), "tf_distill_bench_quality"),
        help="where the trained teachers and the method table's runs are cached",
    )
    parser.add_argument(
        "--row-processes",
        choices=("auto", "yes", "no"),
        default="auto",
        help="run each method row in a process of its own (auto: yes, except with --quick, "
        "where starting 16 processes would take longer than the rows; each run has a seed "
        "of its own either way, so the figures do not depend on it)",
    )
    parser.add_argument(
        "--row-jobs",
        type=int,
        default=ROW_JOBS,
        help="method rows run at a time when each has a process of its own, the cores "
        f"shared among them (default {ROW_JOBS})",
    )
    parser.add_argument("--note", default=None, help="a sentence on the run's conditions")
    parser.add_argument(
        "--merge-into",
        default=None,
        help="a results JSON whose method table the rows run now join (same settings and "
        "seeds: its student-alone errors must be reproduced exactly); the merged table is "
        "written back to it",
    )
    args = parser.parse_args(argv)
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"Unknown part(s) {unknown}. Expected some of {list(PARTS)}.")
    args.methods = [key.strip() for key in args.methods.split(",") if key.strip()]
    unknown = sorted(set(args.methods) - set(quality_methods.METHOD_KEYS))
    if unknown:
        parser.error(
            f"Unknown method(s) {unknown}. Expected some of {quality_methods.METHOD_KEYS}."
        )
    if args.results is None and args.merge_into is not None:
        args.results = args.merge_into
    if args.results is None:
        # A run of part 5 alone does not overwrite the other parts' figures.
        name = "quality_tuning" if args.parts == ["tuning"] else "quality"
        args.results = os.path.join("runs", f"{name}_quick.json" if args.quick else f"{name}.json")
    return args


def load_results(path):
    with open(path) as file:
        return json.load(file)


def merge_methods(path, part):
    """The method table of `path` with the rows of `part` added or replaced.

    Rows from two runs share one table only when the runs are the same
    experiment: the student alone must make exactly the same errors, seed
    by seed (the runs are deterministic on one machine).

    Raises:
        SystemExit: naming both baselines when they differ.
    """
    previous = load_results(path)["methods"]
    for split in ("test", "validation"):
        if previous["alone"][split] != part["alone"][split] or previous["seeds"] != part["seeds"]:
            raise SystemExit(
                f"--merge-into {path}: its student alone made {previous['alone'][split]} "
                f"{split} errors on seeds {previous['seeds']}, this run {part['alone'][split]} "
                f"on seeds {part['seeds']}; rerun every row instead."
            )
    rows = {**previous["methods"], **part["methods"]}
    order = quality_methods.METHOD_KEYS
    merged = dict(part)
    merged["methods"] = {key: rows[key] for key in sorted(rows, key=order.index)}
    return merged


def reproduce_command(argv):
    """The command line without the flags that do not change the figures."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--note", "--results", "--cache-dir"):
            skip = True
            continue
        if arg.split("=")[0] in ("--note", "--results", "--cache-dir"):
            continue
        kept.append(arg)
    return common.command_line(argv=[sys.argv[0]] + kept)


class Run:
    """The results of one invocation, saved and published part by part."""

    def __init__(self, args, argv, settings):
        self.args = args
        self.start = time.perf_counter()
        self.conditions = common.machine_conditions()
        self.results = {
            "command": reproduce_command(argv),
            "cache_dir": args.cache_dir,
            "quick": args.quick,
            "settings": settings,
            "conditions": self.conditions,
            "seconds": {},
        }
        self.folder = os.path.dirname(os.path.abspath(args.results))

    def finish_part(self, name, section, plot=None):
        self.results["seconds"][name] = time.perf_counter() - self.part_start
        elapsed = time.perf_counter() - self.start
        note = f"Part run time: {self.results['seconds'][name] / 60:.1f} min."
        if self.args.note:
            note += " " + self.args.note
        self.results["conditions_text"] = common.conditions_markdown(
            self.conditions, load_after=common.current_load(), note=note
        )
        if plot is not None:
            try:
                path = plot(self.results, self.folder)
                self.results.setdefault("plots", {})[name] = path
                common.log(f"Plot: {path}")
            except Exception:  # a plot never costs the figures
                traceback.print_exc()
        if section is not None:
            markdown = section(self.results)
            common.publish(
                f"quality_{name}", markdown, write=self.args.write, log=common.log
            )
        self.save()
        common.log(f"Part {name} done; {elapsed / 60:.1f} min so far")

    def begin_part(self, name):
        common.log(f"Part {name}")
        self.part_start = time.perf_counter()

    def save(self):
        from tf_distill.files import atomic_write

        os.makedirs(self.folder, exist_ok=True)
        atomic_write(self.args.results, json.dumps(self.results, default=float, indent=1))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    settings = json.loads(json.dumps(QUICK if args.quick else FULL))
    if args.seeds is not None:
        settings["seeds"] = settings["methods_seeds"] = args.seeds
    seeds = list(range(settings["seeds"]))
    method_seeds = list(range(settings["methods_seeds"]))
    run = Run(args, argv, settings)
    results = run.results
    hinton = settings["hinton"]

    teacher = data = None
    if {"hinton", "transfer", "unlabeled", "tuning"} & set(args.parts):
        data = common.load_mnist(
            train_size=hinton["train_size"],
            validation_size=hinton["validation_size"],
            test_size=hinton["test_size"],
            path=args.data,
        )
        common.log(f"Data: {data}")
        run.begin_part("teacher")
        teacher, info = quality_mnist.hinton_teacher(data, hinton, args.cache_dir)
        teacher_errors = quality_mnist.count_errors(teacher, data.x_test, data.y_test)
        common.log(f"Hinton teacher: {teacher_errors} test errors of {len(data.y_test)}")
        results["hinton"] = {
            "teacher": info,
            "teacher_errors": teacher_errors,
            "teacher_validation_errors": quality_mnist.count_errors(
                teacher, data.x_val, data.y_val
            ),
            "train_size": len(data.x_train),
            "validation_size": len(data.x_val),
            "test_size": len(data.y_test),
        }
        run.finish_part("teacher", None)
        # Every student run of parts 1-3 is cached under its fingerprint.
        runs = quality_mnist.Runs(args.cache_dir, data, hinton, teacher, info["path"])

    temperature = None
    if {"hinton", "transfer", "unlabeled"} & set(args.parts):
        # Parts 2 and 3 use part 1's T: from the cache when part 1 is not asked for.
        if "hinton" in args.parts:
            run.begin_part("hinton")
        results["hinton"].update(quality_mnist.run_hinton(runs, hinton, seeds))
        temperature = results["hinton"]["chosen_temperature"]
        if "hinton" in args.parts:
            run.finish_part("hinton", quality_report.hinton_section, quality_report.plot_hinton)

    if "transfer" in args.parts:
        run.begin_part("transfer")
        subsets = quality_mnist.run_small_transfer(
            runs, hinton, seeds, hinton["fractions"], temperature
        )
        results["transfer"] = {
            "alone_all": results["hinton"]["errors"]["alone"],
            "subsets": {repr(fraction): entry for fraction, entry in subsets.items()},
            "temperature": temperature,
            "test_size": len(data.y_test),
        }
        run.finish_part("transfer", quality_report.transfer_section, quality_report.plot_transfer)

    if "methods" in args.parts:
        run.begin_part("methods")
        method_settings = settings["methods"]
        method_data = common.load_mnist(
            train_size=method_settings["train_size"],
            validation_size=method_settings["validation_size"],
            test_size=method_settings["test_size"],
            path=args.data,
        )
        common.log(f"Methods data: {method_data}")
        method_teacher, info = quality_methods.method_teacher(
            method_data, method_settings, args.cache_dir
        )
        # Each row in a process of its own, each run cached under its fingerprint.
        part = quality_methods.run_methods(
            method_teacher, method_data, method_settings, method_seeds, args.methods,
            cache_dir=args.cache_dir, teacher_path=info["path"],
            isolate={"yes": True, "no": False, "auto": not args.quick}[args.row_processes],
            jobs=args.row_jobs,
            data_args={
                "train_size": method_settings["train_size"],
                "validation_size": method_settings["validation_size"],
                "test_size": method_settings["test_size"],
                "path": args.data,
            },
        )
        part.update(
            {
                "seeds": method_seeds,
                "teacher": info,
                "teacher_errors": quality_methods.count_errors(
                    method_teacher, method_data.x_test, method_data.y_test
                ),
                "teacher_parameters": int(method_teacher.count_params()),
                "student_parameters": int(
                    quality_methods.build_student(method_data, 0).count_params()
                ),
                "train_size": len(method_data.x_train),
                "validation_size": len(method_data.x_val),
                "test_size": len(method_data.y_test),
            }
        )
        if args.merge_into is not None:
            part = merge_methods(args.merge_into, part)
            previous = load_results(args.merge_into)
            for key in ("hinton", "transfer", "unlabeled", "recipes"):
                if key in previous and key not in results:
                    results[key] = previous[key]
        results["methods"] = part
        results["recipes"] = quality_report.method_summary(part)
        run.finish_part("methods", quality_report.methods_section, quality_report.plot_methods)

    if "unlabeled" in args.parts:
        run.begin_part("unlabeled")
        fraction = hinton["unlabeled_fraction"]
        try:
            part = quality_mnist.run_unlabeled(runs, hinton, seeds, fraction, temperature)
        except Exception as error:  # guarded: the other parts' figures stand
            traceback.print_exc()
            part = {"error": f"{type(error).__name__}: {error}"}
        part.update({"fraction": fraction, "test_size": len(data.y_test)})
        results["unlabeled"] = part
        run.finish_part(
            "unlabeled",
            quality_report.unlabeled_section,
            quality_report.plot_transfer if "transfer" in results else None,
        )

    if "tuning" in args.parts:
        run.begin_part("tuning")
        part = quality_tuning.run_tuning(
            teacher,
            data,
            {**hinton, **settings["tuning"]},
            seeds,
            directory=os.path.join(run.folder, "quality_tuning_trials"),
        )
        part["test_size"] = len(data.y_test)
        results["tuning"] = part
        run.finish_part("tuning", quality_tuning.tuning_section)

    results["total_seconds"] = time.perf_counter() - run.start
    run.save()
    common.log(f"Done in {results['total_seconds'] / 60:.1f} min; results in {args.results}")
    return 0


if __name__ == "__main__":
    tf.get_logger().setLevel("ERROR")
    sys.exit(main())

"""`training.distribute: multi_worker`: two workers on localhost, TF_CONFIG, chief-only output."""

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml
from processes import wait_all

from tf_distill import architectures
from tf_distill import cli
from tf_distill import distribute
from tf_distill import saving
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.commands import common
from tf_distill.commands import config as config_lib
from tf_distill.commands import run as job
from tf_distill.commands.config import ConfigError
from tf_distill.losses import crossentropy_from_logits

pytestmark = pytest.mark.slow  # workers in processes on localhost

CLUSTER = {"worker": ["localhost:20001", "localhost:20002"]}


def _tf_config(task_type="worker", index=0, cluster=CLUSTER):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_config_accepts_multi_worker_and_lists_the_choices():
    config = config_lib.validate({"training": {"distribute": "multi_worker"}})
    assert config["training"]["distribute"] == "multi_worker"
    with pytest.raises(
        ConfigError,
        match=r"`training.distribute`. Expected one of \['mirrored', 'multi_worker', 'none'\]. "
        r"Received: training.distribute='tpu'",
    ):
        config_lib.validate({"training": {"distribute": "tpu"}})


def test_parse_tf_config_reads_cluster_and_task():
    tf_config = distribute.parse_tf_config(_tf_config(index=1))
    assert tf_config["task"] == {"type": "worker", "index": 1}
    assert tf_config["cluster"] == CLUSTER


@pytest.mark.parametrize(
    "text, message",
    [
        (None, r"environment variable TF_CONFIG, which is not set\. Set it in every worker"),
        ("", r"TF_CONFIG, which is not set"),
        ("{cluster: 1}", r"it is not valid JSON \(.*\)\. Expected e\.g\. TF_CONFIG="),
        ("[1, 2]", r"must be a JSON object with keys 'cluster' and 'task'"),
        ('{"task": {"type": "worker", "index": 0}}', r"'cluster' must map task types"),
        (
            '{"cluster": {"worker": "a:1"}, "task": {"type": "worker"}}',
            r"cluster\['worker'\] must be a non-empty list of 'host:port' strings",
        ),
        (
            '{"cluster": {"worker": ["a"]}, "task": {"type": "worker"}}',
            r"cluster\['worker'\] must be a non-empty list",
        ),
        (
            '{"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "worker"}}',
            r"runs only 'chief' and 'worker' tasks, not \['ps'\]",
        ),
        ('{"cluster": {"worker": ["a:1"]}}', r"'task' must be \{'type': \.\.\., 'index': \.\.\.\}"),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
            r"with a type in \['worker'\]",
        ),
        (
            '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
            r"task index 2 is not in \[0, 2\), the number of 'worker' addresses",
        ),
    ],
)
def test_parse_tf_config_errors_name_the_variable_and_show_an_example(text, message):
    with pytest.raises(distribute.ClusterError, match=message) as error:
        distribute.parse_tf_config(text)
    assert "TF_CONFIG" in str(error.value)
    assert '"cluster": {"worker": ["machine-a:12345", "machine-b:12345"]}' in str(error.value)
    if text:
        assert f"Received: TF_CONFIG={text!r}" in str(error.value)


@pytest.mark.parametrize(
    "cluster, task_type, index, chief",
    [
        (CLUSTER, "worker", 0, True),
        (CLUSTER, "worker", 1, False),
        ({"chief": ["c:1"], "worker": ["w:1"]}, "chief", 0, True),
        ({"chief": ["c:1"], "worker": ["w:1"]}, "worker", 0, False),
    ],
)
def test_chief_is_the_chief_task_or_else_worker_0(cluster, task_type, index, chief):
    assert distribute.is_chief(distribute.parse_tf_config(_tf_config(task_type, index, cluster))) is chief


def test_missing_tf_config_is_a_clear_error_before_any_training(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    config = config_lib.validate(
        {"training": {"distribute": "multi_worker"}, "output": str(tmp_path / "out")}
    )
    with pytest.raises(distribute.ClusterError, match=r"TF_CONFIG, which is not set.*docs/DISTRIBUTED.md"):
        job.run(config, verbose=0)
    assert not (tmp_path / "out").exists()

    path = tmp_path / "job.yaml"
    path.write_text(
        yaml.safe_dump(
            {"training": {"distribute": "multi_worker"}, "output": str(tmp_path / "out")}
        )
    )
    assert cli.main(["run", str(path), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("tf-distill: error: `training.distribute: multi_worker` reads")
    assert "TF_CONFIG" in error
    assert not (tmp_path / "out").exists()


def test_strategy_after_tensorflow_started_is_a_clear_error(monkeypatch):
    tf.constant(0.0) + 1.0  # TensorFlow's runtime has started in this process.
    monkeypatch.setenv("TF_CONFIG", _tf_config())
    with pytest.raises(RuntimeError, match=r"before TensorFlow runs anything.*fresh process"):
        distribute.make_strategy("multi_worker")


def test_datasets_are_sharded_by_data_for_every_worker():
    data = common.load_data({"source": "digits", "seed": 0})
    dataset = common.dataset(data, "train", 64, shuffle=True, seed=0)
    policy = dataset.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA
    # Batches stay global: Keras splits each over the replicas.
    assert [int(x.shape[0]) for x, _ in dataset.take(2)] == [64, 64]


def test_a_worker_restores_from_the_chief_backup_and_writes_its_own(tmp_path):
    output, scratch = tmp_path / "out", tmp_path / "scratch"
    worker = job.Job(config_lib.validate({"output": str(output)}), verbose=0)
    worker.folder = str(scratch)
    shared_backup = output / ".backup" / "distill"
    shared_backup.mkdir(parents=True)
    (shared_backup / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    callback = worker.backup("distill")
    assert callback.backup_dir == str(scratch / ".backup" / "distill")
    # A copy, so that Keras's restore (and its repair of a damaged backup)
    # never writes the chief's files.
    copied = scratch / ".backup" / "distill" / "training_metadata.json"
    assert json.loads(copied.read_text()) == {"epoch": 3, "batch": 0}

    chief = job.Job(config_lib.validate({"output": str(output)}), verbose=0)
    assert chief.backup("distill").backup_dir == str(shared_backup)
    assert chief.resume_point() == worker.resume_point()
    assert '"distill": "{\\"epoch\\": 3' in chief.resume_point()


def test_workers_that_would_resume_differently_stop_with_a_clear_error():
    distribute.check_same_resume_point([7, 7], "out")
    with pytest.raises(
        distribute.ClusterError,
        match=r"workers see different states of the output folder "
        r"'out'.*a file system every worker shares",
    ):
        distribute.check_same_resume_point([7, 8], "out")


# Distillation from a fixed teacher: the single-process and the two-worker
# runs then differ only in how each step's batch is spread.
DISTILL = {
    "data": {"source": "digits", "batch_size": 32},
    "student": {"architecture": "mlp", "size": "small"},
    "distillation": {"student_loss_weight": 0.3, "losses": [{"name": "kd", "temperature": 4.0}]},
    "training": {"epochs": 3, "learning_rate": 0.01, "seed": 0, "baseline": False},
}

def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _train_teacher(path):
    data = common.load_data({"source": "digits", "seed": 0})
    teacher = architectures.build(
        "mlp", data.input_shape, data.num_classes, size="large", seed=0, name="teacher"
    )
    teacher.compile(optimizer=keras.optimizers.Adam(0.01), loss=crossentropy_from_logits)
    teacher.fit(data.x_train, data.y_train, batch_size=32, epochs=4, verbose=0)
    saving.save_model(teacher, path)


def _start_workers(tmp_path, config_path):
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        log = open(tmp_path / f"worker{index}.log", "w")
        workers.append(
            subprocess.Popen(
                # Not --quiet: the log says where each worker writes.
                [sys.executable, "-m", "tf_distill.cli", "run", str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "TF_CPP_MIN_LOG_LEVEL": "2",
                    "TMPDIR": str(scratch),
                    "TF_CONFIG": _tf_config("worker", index, cluster),
                },
            )
        )
        log.close()
    return workers


def test_two_workers_on_localhost_match_one_process(tmp_path):
    teacher_path = tmp_path / "teacher.keras"
    _train_teacher(teacher_path)
    raw = {**DISTILL, "teacher": {"path": str(teacher_path)}}
    config_path = tmp_path / "job.yaml"
    output = tmp_path / "multi_worker"
    config_path.write_text(
        yaml.safe_dump(
            {
                **raw,
                "training": {**raw["training"], "distribute": "multi_worker"},
                "output": str(output),
            }
        )
    )
    workers = _start_workers(tmp_path, config_path)
    try:
        # The single-process run of the same config, meanwhile.
        single = job.run(
            config_lib.validate({**raw, "output": str(tmp_path / "single")}), verbose=0
        )
    except BaseException:
        wait_all(workers, hang_seconds=0)
        raise
    # Each worker exits when training is done; no bound on how long it takes.
    hung = wait_all(workers)
    logs = [(tmp_path / f"worker{index}.log").read_text() for index in range(2)]
    for index, (worker, log) in enumerate(zip(workers, logs)):
        assert worker.returncode == 0, (
            f"worker {index} (exit {worker.returncode}, hung: {hung}):\n{log[-3000:]}"
        )

    # Only the chief (worker 0) wrote the output folder; worker 1 wrote to a
    # scratch folder, removed at the end.
    assert {"metrics.json", "student.keras", "report.md"} <= set(os.listdir(output))
    assert "this worker's files go to" not in logs[0]
    scratch = f"this worker's files go to {tmp_path / 'tmp1'}{os.sep}tf_distill_worker_1_"
    assert scratch in logs[1]
    assert os.listdir(tmp_path / "tmp1") == []
    assert os.listdir(tmp_path / "tmp0") == []
    metrics = json.loads((output / "metrics.json").read_text())
    multi = {row["model"]: row for row in metrics["models"]}
    single = {row["model"]: row for row in single["models"]}
    # The same teacher, evaluated on predictions gathered from both workers.
    assert multi["teacher"]["test_accuracy"] == single["teacher"]["test_accuracy"]
    assert single["teacher"]["test_accuracy"] > 0.85
    assert len(metrics["histories"]["distilled student"]["loss"]) == 3
    # Each global batch is split over the workers and the gradients summed:
    # the same training up to the order of floating-point sums and of the
    # shuffled batches (Keras builds a distributed model from one batch).
    accuracy = multi["distilled student"]["test_accuracy"]
    assert accuracy > 0.75
    assert accuracy == pytest.approx(single["distilled student"]["test_accuracy"], abs=0.05)
    student = saving.load_model(output / "student.keras")
    data = common.load_data({"source": "digits", "seed": 0})
    predictions = student.predict(data.x_test, verbose=0).argmax(axis=-1)
    assert float((predictions == data.y_test).mean()) == pytest.approx(accuracy)


def test_multi_worker_is_refused_on_an_untested_keras():
    distribute.check_multi_worker_keras(distribute.MULTI_WORKER_KERAS_VERSIONS[0] + (0,))
    with pytest.raises(
        distribute.ClusterError,
        match=r"tested with Keras 3\.15 only\. Received: Keras 3\.99\.1\. Install a tested release",
    ):
        distribute.check_multi_worker_keras((3, 99, 1))

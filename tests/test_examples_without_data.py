"""The examples, run outside the repository with no data and no network, stop in one line.

Each example is copied into a folder of its own (so neither `../shared/data/mnist`
from the current folder nor the one next to the repository exists), Keras's
cache points at an empty folder, and every download goes through a proxy that
refuses the connection at once: the real `keras.datasets` path, failing fast.
Nothing trains, so the two processes take the time of importing TensorFlow.
"""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
REFUSED = "http://127.0.0.1:9"  # The discard port: nothing listens, the connection is refused.
TIMEOUT = 300

# What each example is run with, and where it says it looked.
CASES = {
    "keras_io_mnist": ([], ("../shared/data/mnist", "--data")),
    "bring_your_own_model": ([], ("cifar-10-batches-py", "--data")),
}


def _start(name, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"{name}_elsewhere")
    script = folder / f"{name}.py"
    shutil.copyfile(os.path.join(EXAMPLES, f"{name}.py"), script)
    proxies = {key: REFUSED for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
    env = dict(
        os.environ,
        PYTHONPATH=REPO,  # tf_distill as if installed, the example not in the repository.
        KERAS_HOME=str(folder / "keras_home"),
        TF_CPP_MIN_LOG_LEVEL="2",
        no_proxy="",
        NO_PROXY="",
        **proxies,
    )
    arguments, _ = CASES[name]
    return subprocess.Popen(
        [sys.executable, str(script), *arguments],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def processes(request, tmp_path_factory):
    """Starts the selected examples together: importing TensorFlow overlaps."""
    selected = {
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
    }
    started = {name: _start(name, tmp_path_factory) for name in sorted(selected)}
    yield started
    for process in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.slow  # each example started in its own process
@pytest.mark.parametrize("name", sorted(CASES))
def test_example_without_data_says_where_it_looked_in_one_line(processes, name):
    process = processes[name]
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"{name}.py took over {TIMEOUT} s without data.\n{stderr[-3000:]}")
    assert "Traceback" not in stderr, stderr[-3000:]
    assert process.returncode == 2, f"exit {process.returncode}\n{stderr[-3000:]}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    message = lines[-1]
    assert message.startswith(f"{name}.py: "), stderr[-3000:]
    _, mentions = CASES[name]
    for words in mentions:
        assert words in message, message
    # The download was tried, and its failure is named in the same line.
    assert "URL fetch failure" in message or "Connection refused" in message, message
    assert "Data:" not in stdout  # Stopped before any training.

import os

import pytest

from tf_distill import console

NATIVE_LINES = [
    "W0000 00:00:1718000000.123456   4242 cuda_executor.cc:1015] failed call to cuInit",
    "2024-06-01 12:00:00.123456: I tensorflow/core/util/port.cc:153] oneDNN custom ops",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "WARNING:absl:Compiled the loaded model, but the compiled metrics have yet to be built.",
    "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, output_inference_type: FLOAT32",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]


@pytest.mark.parametrize("line", NATIVE_LINES)
def test_native_log_lines_are_recognized(line):
    assert console.NATIVE_LOG.search(line)


@pytest.mark.parametrize(
    "line",
    [
        "tf-distill: error: `training.epochs` must be >= 1. Received: training.epochs=0",
        "Traceback (most recent call last):",
        "Training the teacher (cnn/large, 248,122 parameters, 10 epochs)",
    ],
)
def test_other_lines_are_not(line):
    assert not console.NATIVE_LOG.search(line)


def test_filtered_stderr_drops_native_lines_and_keeps_the_rest(tmp_path):
    captured = tmp_path / "stderr.txt"
    saved = os.dup(2)
    with open(captured, "wb") as handle:
        os.dup2(handle.fileno(), 2)
        try:
            with console.filtered_stderr():
                for line in NATIVE_LINES:
                    os.write(2, (line + "\n").encode())
                os.write(2, b"a real error\n")
                os.write(2, b"Traceback (most recent call last):\n")
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    assert captured.read_text() == "a real error\nTraceback (most recent call last):\n"

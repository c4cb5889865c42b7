"""Keeping TensorFlow's, absl's and the LiteRT converter's log lines off the console.

TensorFlow's C++ runtime, absl and the converter write to file descriptor 2
directly, some of it before absl logging is set up and whatever
`TF_CPP_MIN_LOG_LEVEL` says (the converter's `fully_quantize: 0,
inference_type: 6 …`). `quiet_logs` sets every switch there is, before
TensorFlow is imported; `filtered_stderr` drops what gets through anyway,
line by line, while the rest of stderr (a real error, a traceback) passes at
once. Nothing here imports TensorFlow.
"""

import contextlib
import logging
import os
import re
import sys
import threading
import warnings

# A line TensorFlow, absl or the converter wrote: absl's C++ format
# (`W0000 00:00:1700000000.000000  1234 file.cc:12] ...`), TensorFlow's older
# one (`2024-01-01 12:00:00.000000: I tensorflow/...`), absl's Python format
# (`WARNING:absl:...`), absl's notice before it is set up, the converter's
# quantization settings and the LiteRT interpreter's notices (`INFO: Created
# TensorFlow Lite XNNPACK delegate for CPU.`).
NATIVE_LOG = re.compile(
    r"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+\s+\S+:\d+\]"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] "
    r"|(?:INFO|WARNING|ERROR):(?:absl|tensorflow|h5py):"
    r"|WARNING: All log messages before absl::InitializeLog\(\)"
    r"|fully_quantize: \d+, inference_type: \d+"
    r"|INFO: )"
)


def quiet_logs():
    """Silences TensorFlow's and absl's logs; call before TensorFlow is imported.

    Once TensorFlow is imported (by whoever imports it first), its Python
    logger and absl's keep only errors too.
    """
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("h5py").setLevel(logging.ERROR)
    for module in ("tensorflow", "absl", "tf_keras"):
        warnings.filterwarnings("ignore", module=module)
    try:
        from absl import logging as absl_logging
    except ImportError:  # absl comes with TensorFlow; without it there is nothing to quiet
        return
    absl_logging.set_verbosity(absl_logging.ERROR)


@contextlib.contextmanager
def filtered_stderr(pattern=NATIVE_LOG):
    """Drops the lines of file descriptor 2 that match `pattern`, as they come.

    Every other line is written to the real stderr as soon as it ends.
    """
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if not pattern.search(line.decode(errors="replace")):
                    os.write(original, line)

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the thread ends
        thread.join(timeout=5)
        os.close(original)

"""Waiting for child processes without betting on the machine's speed."""

import time

# A guard against a hang (a process waiting forever for a peer that died),
# not a bound on speed: these runs take one to two minutes on two idle cores
# and several times that when another job loads them.
HANG_SECONDS = 1800


def wait_all(processes, hang_seconds=HANG_SECONDS, poll_seconds=0.5):
    """Waits until every process has exited, or until one has failed.

    The peers of a failed process would wait for it forever, so they are
    killed as soon as it fails; every process still running after
    `hang_seconds` is killed too.

    Returns:
        True if the guard stopped a process that had not failed: it hung.
    """
    deadline = time.monotonic() + hang_seconds
    try:
        while True:
            codes = [process.poll() for process in processes]
            if None not in codes or any(code not in (None, 0) for code in codes):
                return False
            if time.monotonic() > deadline:
                return True
            time.sleep(poll_seconds)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

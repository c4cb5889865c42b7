"""Keras Tuner's distributed search: the chief serves the oracle, workers run trials.

Roles come from `KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP` and
`KERASTUNER_ORACLE_PORT`, as in Keras Tuner's own distributed mode.
"""

import os
import socket
import time

ROLES = ("chief", "worker")


def resolve_role(role=None):
    """`"standalone"`, `"chief"` or `"worker"`, from `role` and the environment.

    Keras Tuner reads `KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP` and
    `KERASTUNER_ORACLE_PORT`. `role="chief"` sets the tuner id to `"chief"`
    if unset; `role="worker"` gives a worker without an id a unique one.

    Raises:
        ValueError: for an unknown role, a role without the oracle's address
            in the environment, or a role that contradicts the tuner id.
    """
    environ = os.environ
    if role is None:
        if "KERASTUNER_ORACLE_IP" not in environ:
            return "standalone"
        role = "chief" if "chief" in environ.get("KERASTUNER_TUNER_ID", "") else "worker"
    if role not in ROLES:
        raise ValueError(
            f"Invalid value for argument `role`. Expected one of {list(ROLES)} or None. "
            f"Received: role={role!r}"
        )
    missing = [k for k in ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT") if not environ.get(k)]
    if missing:
        raise ValueError(
            f"Running as the search's {role} needs the oracle's address in the "
            f"environment: set {' and '.join(missing)} (Keras Tuner's "
            "distributed mode), e.g. KERASTUNER_ORACLE_IP=127.0.0.1 "
            "KERASTUNER_ORACLE_PORT=8000."
        )
    tuner_id = environ.get("KERASTUNER_TUNER_ID")
    if role == "chief":
        if tuner_id is not None and "chief" not in tuner_id:
            raise ValueError(
                "The chief's KERASTUNER_TUNER_ID must contain 'chief'. Received: "
                f"KERASTUNER_TUNER_ID={tuner_id!r}"
            )
        environ.setdefault("KERASTUNER_TUNER_ID", "chief")
    else:
        if tuner_id is not None and "chief" in tuner_id:
            raise ValueError(
                "A worker's KERASTUNER_TUNER_ID must not contain 'chief'. Received: "
                f"KERASTUNER_TUNER_ID={tuner_id!r}"
            )
        environ.setdefault("KERASTUNER_TUNER_ID", f"tuner-{socket.gethostname()}-{os.getpid()}")
    return role


def serve_oracle(tuner, poll_seconds=0.2):
    """Serves the chief's oracle until every worker has finished.

    Keras Tuner's own server (`tuner.search` on the chief) checks for the end
    every 20 seconds; this loop checks every `poll_seconds` and stops the
    gRPC server when done.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    tuner.save()
    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(tuner.oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"The oracle cannot listen on {address}: is the port in use?")
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(tuner.oracle)):
            time.sleep(poll_seconds)
    finally:
        server.stop(grace=1.0)


def wait_for_oracle(timeout):
    import grpc

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise TimeoutError(
            f"No search oracle answered at {address} within {timeout:g} s. Start "
            "the chief (KERASTUNER_TUNER_ID=chief) first, or raise "
            "`tuning.wait_seconds`."
        ) from None
    finally:
        channel.close()


def record_trials(tuner):
    """A list that fills with the ids of the trials this process runs."""
    ran = []
    end_trial = tuner.on_trial_end

    def on_trial_end(trial):
        ran.append(trial.trial_id)
        end_trial(trial)

    tuner.on_trial_end = on_trial_end
    return ran

#!/bin/sh
# Runs `tf-distill run` on the config-file examples. From a fresh clone, after
# `make demo` (which creates .venv/), nothing needs activating; from any folder:
#   examples/config_run/run.sh            the digits job (a few minutes on a laptop CPU)
#   examples/config_run/run.sh mnist      the MNIST job (needs ../shared/data/mnist)
set -eu
# The repository root, found from this script's own location: relative paths
# in the configs (data, output) are read from there.
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
if [ -x .venv/bin/tf-distill ]; then
    tf_distill=.venv/bin/tf-distill        # made by `make demo` or `make install`
elif command -v tf-distill >/dev/null 2>&1; then
    tf_distill=tf-distill                  # installed some other way, on the PATH
else
    echo "run.sh: no $root/.venv/bin/tf-distill: run \`make demo\` (or \`make install\`) first." >&2
    exit 2
fi
exec "$tf_distill" run "examples/config_run/${1:-digits}.yaml"

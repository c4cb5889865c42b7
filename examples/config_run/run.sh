#!/bin/sh
# Runs the config-file examples from the repository root.
#   examples/config_run/run.sh            the digits job (a few minutes on a laptop CPU)
#   examples/config_run/run.sh mnist      the MNIST job (needs ../shared/data/mnist)
set -eu
cd "$(dirname "$0")/../.."
config="examples/config_run/${1:-digits}.yaml"
exec tf-distill run "$config"

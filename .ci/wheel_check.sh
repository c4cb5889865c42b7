#!/usr/bin/env bash
# CI: the package as users install it. Builds the wheel, installs it into a
# clean virtual environment (its dependencies from PyPI) and runs `tf-distill`
# from a folder outside the checkout, so that a file the wheel lacks (a recipe,
# a module) fails here rather than on a user's machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS

# Built from a copy: building in the checkout would leave build/ and *.egg-info
# there, and an installed copy could then be shadowed by the checkout.
mkdir "$WORK/source"
cp -r setup.cfg pyproject.toml README.md LICENSE tf_distill "$WORK/source/"
"$PYTHON" -m pip wheel --quiet --no-deps -w "$WORK/dist" "$WORK/source"
"$PYTHON" -m venv "$WORK/venv"
BIN=$WORK/venv/bin
"$BIN/python" -m pip install --quiet --upgrade pip
"$BIN/python" -m pip install --quiet "$WORK"/dist/tf_distill-*.whl
echo "wheel check: built and installed in $((SECONDS - start)) s"

mkdir "$WORK/elsewhere"
cd "$WORK/elsewhere"
"$BIN/tf-distill" --help >/dev/null
"$BIN/tf-distill" losses kd >losses_kd.txt
if ! grep -q "^Recipe: .*/tf_distill/recipes/kd.yaml$" losses_kd.txt; then
    echo "wheel check: \`tf-distill losses kd\` printed no recipe:" >&2
    cat losses_kd.txt >&2
    exit 1
fi
# The smallest real run: the embedded digits, one epoch, one seed.
cat >job.yaml <<'YAML'
data: {source: digits, test_size: 0.4}
teacher: {architecture: cnn, size: small, epochs: 1}
student: {architecture: mlp, size: small}
distillation: {losses: [{name: kd, temperature: 4.0}]}
training: {epochs: 1, seeds: [0]}
output: out
YAML
"$BIN/tf-distill" run job.yaml --quiet >run.txt
for file in metrics.json report.md student_seed0.keras; do
    test -s "out/$file" || { echo "wheel check: the run wrote no out/$file" >&2; exit 1; }
done
echo "wheel check: passed in $((SECONDS - start)) s"

#!/bin/sh
# Install smarty-emulator into a new virtual environment, the way the image does.
#
#   docker/install.sh --deps VENV SRC       the venv and the dependencies that SRC/pyproject.toml names
#   docker/install.sh --package VENV SRC    then the package itself from the source tree SRC, into that venv
#   docker/install.sh VENV SRC              both at once; SRC may also be a wheel
#
# PYTHON=python3.12 chooses the interpreter. The Dockerfile's builder stage runs the two halves as two steps, so
# that the dependencies' layer is reused from the build cache while only the emulator's code changes;
# tests/ops/test_docker.py runs the same steps: a working `smarty-emulator serve` from them is tested without a
# container engine. Every dependency is a prebuilt wheel (dlib from dlib-bin, for linux/amd64 and linux/arm64)
# except face_recognition_models, a data-only source package that builds without a compiler.
set -eu
phase=all
case "${1:-}" in
    --deps) phase=deps; shift ;;
    --package) phase=package; shift ;;
esac
venv="$1"
src="$2"
python="${PYTHON:-python3}"
pip() { "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"; }

prune() {
    # face_recognition_models ships four dlib models (~130 MB); the emulator loads two (the 5-point landmark
    # model and the ResNet descriptor, ~31 MB). The 68-point landmark model (~100 MB) and the CNN detector are
    # not used.
    models="$("$venv/bin/python" -c 'import importlib.util as u
print(u.find_spec("face_recognition_models").submodule_search_locations[0])')/models"
    rm -f "$models/shape_predictor_68_face_landmarks.dat" "$models/mmod_human_face_detector.dat"
    # Test suites that packages ship (numpy's, ~17 MB) are never run in the image: they leave it too.
    find "$venv" -path '*/site-packages/*' \( -type d -name tests -o -type f -name conftest.py \) -prune \
        -exec rm -rf {} +
}

finish() {
    "$venv/bin/python" -c 'from emulator.face.models import model_paths; model_paths()'  # both models are there
    "$venv/bin/python" -c 'from emulator.face.attributes import model_files; model_files()'  # searcher: 1's too
    # Nothing installs at run time: pip and setuptools leave the environment (pip compiled the byte-code already,
    # so workers and the health check start without compiling).
    "$venv/bin/python" -m pip uninstall --quiet --yes pip setuptools 2>/dev/null || true
}

case "$phase" in
    deps)
        "$python" -m venv "$venv"
        "$venv/bin/python" -c 'import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' "$src/pyproject.toml" \
            > "$venv/requirements.txt"
        pip -r "$venv/requirements.txt"
        rm "$venv/requirements.txt"
        prune
        ;;
    package)
        pip --no-deps "$src"
        finish
        ;;
    all)
        "$python" -m venv "$venv"
        pip "$src"
        prune
        finish
        ;;
esac

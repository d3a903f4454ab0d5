#!/usr/bin/env bash
# Create or update the one project environment (.venv) with the measured pins, plus the open
# hardware tools. Idempotent: a stamp of the inputs' hash makes a second run return in ~0.1 s.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
STAMP=$VENV/.qpolicy-stamp
HASH=$(cat requirements/*.txt tools/bootstrap.sh setup.py setup.cfg | sha256sum | cut -d' ' -f1)

need_apt=()
for tool in verilator iverilog yosys; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
# off-screen MuJoCo rendering (qpolicy render) through Mesa's EGL, no GPU or display needed
if ! ldconfig -p 2>/dev/null | grep -q "libEGL_mesa.so"; then
  need_apt+=(libegl1 libegl-mesa0 libgl1-mesa-dri)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing ${need_apt[*]} (Debian packages)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "bootstrap: warning: ${need_apt[*]} missing; run: sudo apt-get install -y ${need_apt[*]}" >&2
  fi
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && [ -x "$VENV/bin/qpolicy" ]; then
  exit 0
fi
echo "bootstrap: creating/updating $VENV (first time: about 1-2 minutes)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
LOG=$VENV/bootstrap.log
pip_install() {  # quiet on success; the full pip log on failure
  if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" >"$LOG" 2>&1; then
    grep -v "^WARNING: Location" "$LOG" >&2
    echo "bootstrap: pip install $* failed" >&2
    exit 1
  fi
}
# torch first and alone, pinned: the local CPU wheel. Nothing after this may pull a CUDA build.
pip_install torch==2.13.0
pip_install -r requirements/base.txt
pip_install -r requirements/ros.txt
pip_install --no-deps -e .
"$VENV/bin/python" - <<'PYEOF'
import torch, brevitas, qonnx, gymnasium, mujoco  # noqa: F401  fail loudly if an install broke
assert torch.__version__.startswith("2.13.0") and "+cpu" in torch.__version__, torch.__version__
PYEOF
echo "$HASH" > "$STAMP"
echo "bootstrap: environment ready"

#!/usr/bin/env bash
# Site-packages size of the install sets, each built from its lock with hashes
# required and no bytecode (as `uv pip install` and the image's
# `pip install --no-compile` leave it), then after scripts/slim-venv.sh (what
# the image runs), then with bytecode compiled (what the image ships):
#   bash scripts/measure-install.sh [WORK_DIR] [SETS...]     (default sets: base runtime dev)
# Installs with the uv of requirements/tools.txt (.venv/bin/uv, else uv on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d)}
shift || true
sets=("${@:-base runtime dev}")
py=${PY:-python3}
uv=$(command -v .venv/bin/uv || command -v uv)
mb() { du -sm "$1" | cut -f1; }
for set in ${sets[*]}; do
  venv="$work/$set"
  rm -rf "$venv"
  "$py" -m venv --without-pip "$venv"
  site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
  start=$(date +%s.%N)
  "$uv" pip install -q --python "$venv/bin/python" --require-hashes --only-binary :all: --link-mode copy \
    -r "requirements/$set.txt"
  end=$(date +%s.%N)
  installed=$(mb "$site")
  sh scripts/slim-venv.sh "$venv"
  slim=$(mb "$site")
  "$venv/bin/python" -m compileall -q "$site" >/dev/null || true
  compiled=$(mb "$site")
  printf '%-8s site-packages: %4s MB installed, %4s MB slimmed, %4s MB slimmed with bytecode (uv: %.1f s)\n' \
    "$set" "$installed" "$slim" "$compiled" "$(awk "BEGIN { print $end - $start }")"
done

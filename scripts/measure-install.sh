#!/usr/bin/env bash
# Site-packages size of the base and runtime (base + jobs) install sets, built
# the way the Dockerfile builds the image's venv (no pip inside, from the lock
# with hashes), and how long pip took:
#   bash scripts/measure-install.sh [WORK_DIR]
# Prints MB as installed, after scripts/slim-venv.sh, and with bytecode
# compiled (what the image ships).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d)}
py=${PY:-python3}
mb() { du -sm "$1" | cut -f1; }
for set in base runtime; do
  venv="$work/$set"
  rm -rf "$venv"
  "$py" -m venv --without-pip "$venv"
  site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
  start=$(date +%s.%N)
  "$py" -m pip --python "$venv/bin/python" install -q --no-compile --require-hashes --only-binary=:all: \
    -r "requirements/$set.txt" 2>&1 | grep -v "is ignored" || true
  end=$(date +%s.%N)
  installed=$(mb "$site")
  sh scripts/slim-venv.sh "$venv"
  slim=$(mb "$site")
  "$venv/bin/python" -m compileall -q "$site" >/dev/null
  compiled=$(mb "$site")
  printf '%-8s site-packages: %4s MB installed, %4s MB slimmed, %4s MB with bytecode (pip: %.0f s)\n' \
    "$set" "$installed" "$slim" "$compiled" "$(awk "BEGIN { print $end - $start }")"
done

#!/usr/bin/env bash
# Installs everything moviegen needs on a fresh Debian/Ubuntu machine, then gets out of the way.
# Idempotent and quick when nothing changed: `make demo` and `make test` call it every time.
#   - Debian packages (ffmpeg + ffprobe, fonts, exiftool) through apt-get when missing;
#   - with --test (what `make test` passes): also Debian's chromium, only for the test that opens
#     the run report in a headless browser; running moviegen never needs it;
#   - a virtual environment in .venv with the CPU build of torch pinned (an unpinned torch pulls
#     a multi-GB CUDA build) and the project installed editable with its dev tools.
# On a GPU machine, install the CUDA torch you want into .venv first; this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."

for_tests=false
for arg in "$@"; do
  case "$arg" in
    --test) for_tests=true ;;
    *) echo "usage: scripts/setup.sh [--test]" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

apt_packages=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || apt_packages+=(ffmpeg)
command -v exiftool >/dev/null || apt_packages+=(libimage-exiftool-perl)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || apt_packages+=(fonts-dejavu-core)
# Burned-in text (moviegen/overlays.py) finds fonts through fontconfig: Noto Sans for Latin, Greek,
# Cyrillic, Arabic, Hebrew, Indic and Thai (12 MB), WenQuanYi Micro Hei for Chinese, Japanese and
# Korean (2 MB; install fonts-noto-cjk, 57 MB, for Noto's CJK faces, which are then preferred).
command -v fc-list >/dev/null || apt_packages+=(fontconfig)
[ -f /usr/share/fonts/truetype/noto/NotoSans-Bold.ttf ] || apt_packages+=(fonts-noto-core)
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || apt_packages+=(fonts-wqy-microhei)
# The report test (tests/test_report.py) renders a real report in headless Chromium.
if $for_tests && ! command -v chromium >/dev/null; then apt_packages+=(chromium); fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  if command -v apt-get >/dev/null && { [ -z "$sudo" ] || $sudo true 2>/dev/null; }; then
    echo "setup: installing Debian packages: ${apt_packages[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
  else
    echo "setup: cannot apt-get ${apt_packages[*]} (without ffmpeg moviegen falls back to imageio-ffmpeg's bundled one; without chromium the report's browser test is skipped, or fails when CI is set)." >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.moviegen-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv (first time: about 2 minutes; log: .venv/pip.log)"
  pip_install() { .venv/bin/python -m pip install --progress-bar off "$@" >>.venv/pip.log 2>&1 \
    || { tail -n 30 .venv/pip.log >&2; echo "setup: pip install $* failed" >&2; exit 1; }; }
  : > .venv/pip.log
  pip_install --upgrade pip
  .venv/bin/python -c "import torch" 2>/dev/null || pip_install torch==2.13.0
  pip_install -c constraints.txt -e '.[dev]'
  .venv/bin/python -c "import moviegen, flows, tasks, torch, diffusers, prefect" \
    || { echo "setup: the Python install failed (see above)" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

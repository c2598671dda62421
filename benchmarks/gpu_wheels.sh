#!/usr/bin/env bash
# Download the wheels benchmarks/bench_gpu.py needs on a GPU machine that has torch, transformers,
# tokenizers, accelerate, safetensors, numpy, pillow and pyyaml but not diffusers or pydantic
# (the device image described in the README's GPU section). Python 3.12, manylinux x86_64.
#
#     benchmarks/gpu_wheels.sh [FOLDER]        # default: .whl in the repository root
#
# The versions are the ones this checkout's virtual environment holds, so the GPU runs the code
# the tests ran. The folder is added to .git/info/exclude: wheels are never committed.
set -euo pipefail
root="$(git rev-parse --show-toplevel)"
dest="${1:-$root/.whl}"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")" "$dest"
grep -qxF "/.whl/" "$exclude" 2>/dev/null || echo "/.whl/" >>"$exclude"

# What moviegen.generate, moviegen.models.registry and moviegen.config import at module level,
# and what those need in turn (diffusers: importlib-metadata; pydantic: its core, annotated-types,
# typing-inspection, a new enough typing-extensions; pydantic-settings: python-dotenv).
packages=(diffusers pydantic pydantic-core annotated-types typing-inspection typing-extensions
  pydantic-settings python-dotenv importlib-metadata)
pins=()
for name in "${packages[@]}"; do
  version="$("$python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")"
  pins+=("$name==$version")
done
rm -f "$dest"/*.whl
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" "${pins[@]}"
ls -1 "$dest"
du -sh "$dest"

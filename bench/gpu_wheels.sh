#!/usr/bin/env bash
# Download wheels of prunebench's runtime dependencies for the bare GPU machine
# (python 3.12, x86_64 Linux, torch + numpy preinstalled, no network) into .wheels/.
#
#   bash bench/gpu_wheels.sh          # what bench/gpu_check.py imports (fits the 64 MiB carry
#                                     # next to the 51 MiB cifar10-jpeg.zip): ~8 MB
#   bash bench/gpu_wheels.sh --all    # every runtime dependency in pyproject.toml but torch
#
# On the GPU machine (with .wheels carried):
#   pip install --no-index --find-links .wheels pydantic pyyaml torch-pruning pillow platformdirs
# torch is never downloaded (the machine has its CUDA build); torch-pruning is fetched
# without its dependencies (torch, numpy) for that reason.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.wheels
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi

# the GPU check's imports (src/prunebench: recipe, data, models, train, stack, pruning)
GPU_SET=(pydantic pyyaml pillow platformdirs)
# the rest of pyproject's runtime dependencies (torch and torch-pruning are handled apart)
REST=(numpy typer rich matplotlib)

pkgs=("${GPU_SET[@]}")
if [ "${1:-}" = "--all" ]; then pkgs+=("${REST[@]}"); fi

# version ranges from pyproject.toml, so the wheels satisfy what prunebench declares
spec() {
  "$PY" - "$1" <<'EOF'
import re, sys, tomllib
name = sys.argv[1]
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for d in deps:
    if re.split(r"[<>=!~\s\[]", d, maxsplit=1)[0].lower() == name.lower():
        print(d)
        break
else:
    print(name)
EOF
}

mkdir -p "$DEST"
specs=()
for p in "${pkgs[@]}"; do
  if [ "$p" = pillow ] && [ "${1:-}" != "--all" ]; then
    # pillow 10.x (pyproject: >=10) is 4.5 MB against 7-8 MB for 11+: the carry is 64 MiB
    # and the JPEG copy of CIFAR-10 alone is 51 MiB
    specs+=("pillow>=10,<11")
  else
    specs+=("$(spec "$p")")
  fi
done

# platform wheels: manylinux 2.17 (= manylinux2014) up to 2.28 (torch 2.11's own baseline);
# pure-python wheels (py3-none-any) match any --platform
"$PY" -m pip download --quiet --only-binary=:all: --dest "$DEST" \
  --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 \
  "${specs[@]}"
# torch-pruning is pure python; without --no-deps pip would fetch a whole torch wheel
"$PY" -m pip download --quiet --only-binary=:all: --no-deps --dest "$DEST" \
  --python-version 3.12 --implementation py --abi none --platform any \
  "$(spec torch-pruning)"

# never torch (nor nvidia-*/triton) in the carried folder
rm -f "$DEST"/torch-[0-9]*.whl "$DEST"/nvidia_*.whl "$DEST"/triton-*.whl
if [ "${1:-}" != "--all" ]; then rm -f "$DEST"/numpy-*.whl; fi  # the GPU machine has numpy
ls -la "$DEST"
du -sh "$DEST"

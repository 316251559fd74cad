# Sourced by demo.sh and test.sh: a .venv with the project and its test tools, and the local images.
# Nothing is pulled from a container registry: the images are built from Debian packages.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing provision and its test tools into .venv" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
  .venv/bin/python -m pip install --quiet -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# a Docker Engine with the Compose v2 plugin: installed and started here when missing (root or sudo), else
# the exact commands to run
bash scripts/ensure-docker.sh
# xfsprogs (mkfs.xfs): the copy-on-write branch tests make a small XFS image with reflinks and mount it;
# busybox: the stack's shell scripts are unit-tested in BusyBox's userland too (Alpine images run them there)
missing=
command -v mkfs.xfs >/dev/null || missing="$missing xfsprogs"
command -v busybox >/dev/null || missing="$missing busybox"
if [ -n "$missing" ] && command -v apt-get >/dev/null; then
  sudo=; [ "$(id -u)" = 0 ] || sudo="sudo -n"
  echo "bootstrap: installing$missing" >&2
  # shellcheck disable=SC2086 # one package a word
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing; } \
    >/tmp/provision-apt.log 2>&1 || { tail -n 20 /tmp/provision-apt.log >&2; echo "bootstrap: could not apt-get install$missing" >&2; }
fi
bash scripts/build-images.sh >&2

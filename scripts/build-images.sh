#!/usr/bin/env bash
# Build the local Docker images the tests and the demo run, without any container
# registry (nothing is pulled):
#
#   provision-test/debian-base:bookworm  Debian packages from tests/images/base-packages,
#                                        made with mmdebstrap + docker import
#   provision-test/postgres:15 (+ :15-b) tests/images/db   - the postgres:16-alpine interface
#   provision-test/debian-base:trixie    postgresql-17 from Debian 13, the same way
#   provision-test/postgres:17           tests/images/db on it (major upgrades are tested 15 -> 17)
#   provision-test/postgrest:12          tests/images/api  - the postgrest/postgrest interface
#   provision-test/rclone:1              Debian's rclone (the rclone/rclone image's tool), the offsite copier
#   provision-test/s3:moto               tests/images/s3   - an S3 server (moto's, from PyPI, pinned below)
#
# Idempotent and cached: each image carries the label io.provision.build-hash, a
# sha256 of the files it is built from (and of its base image's hash); an image
# whose label matches is kept, otherwise it is rebuilt. Prints one line per image.
# Needs: a Docker Engine, Debian apt sources (mmdebstrap is apt-get installed if
# missing). Env: REBUILD=1 forces a rebuild, DEBIAN_MIRROR overrides the mirror.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$root/tests/images
BASE=provision-test/debian-base:bookworm
DB=provision-test/postgres:15
DB_ALIASES=(provision-test/postgres:15-b)
API=provision-test/postgrest:12
RCLONE=provision-test/rclone:1
RCLONE_PACKAGES=rclone,ca-certificates
S3=provision-test/s3:moto
S3_REQUIREMENTS=("moto[s3]==5.2.6" "flask==3.1.3" "flask-cors==6.0.5")
SUITE=bookworm
BASE17=provision-test/debian-base:trixie
DB17=provision-test/postgres:17
SUITE17=trixie
PACKAGES17=postgresql-17
# Bump when the base-image recipe below changes (it is not hashed itself).
RECIPE=2
HASH_LABEL=io.provision.build-hash

die() { echo "build-images: error: $*" >&2; exit 1; }
command -v docker >/dev/null || die "docker is not installed"

# One build at a time (test runs may start this concurrently).
if command -v flock >/dev/null; then
  exec 9>"${TMPDIR:-/tmp}/provision-build-images.$(id -u).lock"
  flock 9
fi

sha() { sha256sum | cut -c1-64; }
# Hash of a directory's files (path + content), ignoring hidden files and Python caches
# (.mypy_cache, __pycache__, ...).
dir_hash() {
  (cd "$src" && find "$1" -type f ! -path '*/.*' ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum) | sha
}
# Label value of an existing image, or "" when there is no such image.
current_hash() {
  docker image inspect -f "{{index .Config.Labels \"$HASH_LABEL\"}}" "$1" 2>/dev/null || true
}
built=0
check_engine() { docker info >/dev/null 2>&1 || die "cannot reach the Docker Engine (is it running?)"; }

debian_mirror() {
  local m=${DEBIAN_MIRROR:-}
  [ -n "$m" ] || m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
    | grep debian | grep -v security | head -1 || true)
  [ -n "$m" ] || m=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    | awk '$2 !~ /^\[/ {print $2} $2 ~ /^\[/ {print $3}' | grep debian | grep -v security | head -1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

build_base() {  # $1 = hash, $2 = image, $3 = Debian suite, $4 = packages (comma-separated)
  local packages=$4 id log
  [ -n "$packages" ] || die "no packages listed in $src/base-packages"
  log=$(mktemp)
  if ! command -v mmdebstrap >/dev/null; then
    local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    echo "build-images: installing mmdebstrap" >&2
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mmdebstrap; } >"$log" 2>&1 \
      || { tail -n 20 "$log" >&2; die "could not apt-get install mmdebstrap"; }
  fi
  # Stream the root file system straight into docker import; tag only if both succeed.
  # No main cluster at install time (the db entrypoint runs initdb), no docs/man/locales
  # (PostgreSQL's man pages are removed afterwards: excluding them breaks update-alternatives),
  # and no LLVM (130 MB, only for PostgreSQL's JIT, which is silently off without llvmjit.so).
  if ! id=$(set -o pipefail; mmdebstrap --variant=essential --include="$packages" \
      --aptopt='APT::Install-Recommends "false"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --setup-hook='mkdir -p "$1/etc/postgresql-common/createcluster.d" && echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.d/no-main-cluster.conf"' \
      --customize-hook='chroot "$1" dpkg --purge --force-depends libllvm14 libz3-4 >/dev/null 2>&1 || true' \
      --customize-hook='chroot "$1" dpkg --purge --force-depends libllvm19 libz3-4 >/dev/null 2>&1 || true' \
      --customize-hook='rm -rf "$1"/usr/lib/postgresql/*/lib/llvmjit* "$1"/usr/lib/postgresql/*/lib/bitcode' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log "$1"/var/cache/debconf/*-old "$1"/usr/share/postgresql/*/man' \
      "$3" - "$(debian_mirror)" 2>"$log" \
    | docker import -c 'CMD ["/bin/bash"]' -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      -c "LABEL io.provision.test-image=true" -c "LABEL $HASH_LABEL=$1" - 2>>"$log"); then
    tail -n 30 "$log" >&2; rm -f "$log"
    [ -z "${id:-}" ] || docker image rm "$id" >/dev/null 2>&1 || true  # a partial import
    die "building $2 with mmdebstrap + docker import failed (packages: $packages)"
  fi
  rm -f "$log"
  docker tag "$id" "$2"
}

build_dockerfile() {  # $1 = image, $2 = dir under tests/images, $3 = hash, $4... = docker build arguments
  local image=$1 dir=$2 hash=$3 log; shift 3; log=$(mktemp)
  # Legacy builder: no buildx needed, and FROM resolves to the local base image.
  if ! DOCKER_BUILDKIT=0 docker build --label "$HASH_LABEL=$hash" "$@" -t "$image" "$src/$dir" >"$log" 2>&1; then
    tail -n 30 "$log" >&2; rm -f "$log"
    die "docker build of $image from tests/images/$dir failed"
  fi
  rm -f "$log"
}

build_s3() {  # $1 = hash: tests/images/s3 plus moto's server installed (pip --target) into the context
  local ctx log; ctx=$(mktemp -d); log=$(mktemp)
  cp -r "$src/s3/." "$ctx/"
  local python=python3; [ ! -x "$root/.venv/bin/python" ] || python=$root/.venv/bin/python
  if ! "$python" -m pip install --quiet --disable-pip-version-check --target "$ctx/site" "${S3_REQUIREMENTS[@]}" \
      >"$log" 2>&1; then
    tail -n 20 "$log" >&2; rm -rf "$ctx" "$log"
    die "could not pip install the S3 stand-in's packages (${S3_REQUIREMENTS[*]})"
  fi
  if ! DOCKER_BUILDKIT=0 docker build --label "$HASH_LABEL=$1" -t "$S3" "$ctx" >"$log" 2>&1; then
    tail -n 30 "$log" >&2; rm -rf "$ctx" "$log"
    die "docker build of $S3 from tests/images/s3 failed"
  fi
  rm -rf "$ctx" "$log"
}

ensure() {  # $1 = image, $2 = hash, $3 = build function, $4... = its arguments
  local image=$1 hash=$2 builder=$3; shift 3
  local have; have=$(current_hash "$image")
  if [ "$have" = "$hash" ] && [ "${REBUILD:-0}" != 1 ]; then
    echo "$image already present"
    return
  fi
  [ -n "$have" ] || check_engine
  local t0=$SECONDS
  "$builder" "$@"
  built=1
  echo "$image built in $((SECONDS - t0)) s"
}

base_hash=$( { echo "recipe $RECIPE suite $SUITE"; cat "$src/base-packages"; } | sha)
db_hash=$( { echo "$base_hash"; dir_hash db; } | sha)
api_hash=$( { echo "$base_hash"; dir_hash api; } | sha)
base17_hash=$( { echo "recipe $RECIPE suite $SUITE17"; echo "$PACKAGES17"; } | sha)
db17_hash=$( { echo "$base17_hash"; dir_hash db; } | sha)
rclone_hash=$( { echo "recipe $RECIPE suite $SUITE"; echo "$RCLONE_PACKAGES"; } | sha)
s3_hash=$( { echo "$base_hash"; dir_hash s3; echo "${S3_REQUIREMENTS[*]}"; } | sha)
base_packages=$(sed 's/#.*//' "$src/base-packages" | tr -s ' \t\n' ',' | sed 's/^,//; s/,$//')

ensure "$BASE" "$base_hash" build_base "$base_hash" "$BASE" "$SUITE" "$base_packages"
ensure "$DB" "$db_hash" build_dockerfile "$DB" db "$db_hash"
ensure "$BASE17" "$base17_hash" build_base "$base17_hash" "$BASE17" "$SUITE17" "$PACKAGES17"
ensure "$DB17" "$db17_hash" build_dockerfile "$DB17" db "$db17_hash" --build-arg "BASE=$BASE17" --build-arg PG_MAJOR=17
db_id=$(docker image inspect -f '{{.Id}}' "$DB")
for alias in "${DB_ALIASES[@]}"; do
  if [ "$(docker image inspect -f '{{.Id}}' "$alias" 2>/dev/null || true)" != "$db_id" ]; then
    docker tag "$DB" "$alias"
    echo "$alias tagged"
  else
    echo "$alias already present"
  fi
done
ensure "$API" "$api_hash" build_dockerfile "$API" api "$api_hash"
ensure "$RCLONE" "$rclone_hash" build_base "$rclone_hash" "$RCLONE" "$SUITE" "$RCLONE_PACKAGES"
ensure "$S3" "$s3_hash" build_s3 "$s3_hash"

# Drop the untagged test images that rebuilds replaced (those still used by a container stay).
if [ "$built" = 1 ]; then
  docker image prune -f --filter label=io.provision.test-image=true >/dev/null 2>&1 || true
fi

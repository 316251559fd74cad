#!/usr/bin/env bash
# Make a Docker Engine with the Compose v2 plugin answer on this machine; idempotent (a few seconds when it
# already does). Run by scripts/bootstrap.sh when `docker info` fails.
#
# As root (or with passwordless sudo) on Debian or Ubuntu it:
#   - installs the distribution's docker.io when there is no dockerd,
#   - installs the Compose v2 plugin when `docker compose version` fails (the distribution's docker-compose
#     v2 package where it has one; on Debian 12 only the plugin binary of Debian 13's package is unpacked),
#   - starts dockerd in the background (log: /var/log/dockerd.log) when its socket does not answer,
# and says what it did. Anywhere else it stops with the commands to run, and changes nothing.
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  exit 0
fi

SUDO=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    cat >&2 <<'HELP'
ensure-docker: no Docker Engine answers, and installing one needs root. Either run as root (or with
passwordless sudo), or install it yourself, then run the command again:
  Debian/Ubuntu: sudo apt-get install docker.io docker-compose-v2   (Debian 12: docker.io, then the Compose
                 v2 plugin from https://docs.docker.com/compose/install/linux/)
                 sudo systemctl start docker   (or: sudo dockerd &)
                 sudo usermod -aG docker "$USER"   (then log in again)
  other systems: https://docs.docker.com/engine/install/ and https://docs.docker.com/compose/install/
HELP
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  log "no Docker Engine answers and this is not a Debian or Ubuntu system: install Docker Engine and the"
  log "Compose v2 plugin (https://docs.docker.com/engine/install/), start it, and run the command again"
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
apt_updated=0
apt_update() { [ "$apt_updated" = 1 ] || { "${SUDO[@]}" apt-get update -qq >/dev/null; apt_updated=1; }; }

# the Debian mirror apt already uses (first URIs: line, else the first deb line)
debian_mirror() {
  local m
  m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1)
  [ -n "$m" ] || m=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v security | head -1)
  [ -n "$m" ] || { log "no Debian mirror found in apt's sources"; return 1; }
  echo "$m"
}

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io"
  apt_update
  "${SUDO[@]}" apt-get install -y -qq docker.io >/dev/null
fi

if ! docker compose version >/dev/null 2>&1; then
  . /etc/os-release
  if apt-cache policy docker-compose-v2 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    log "installing docker-compose-v2"
    apt_update
    "${SUDO[@]}" apt-get install -y -qq docker-compose-v2 >/dev/null
  elif [ "${VERSION_CODENAME:-}" != "bookworm" ] && apt-cache policy docker-compose 2>/dev/null | grep -q 'Candidate: 2\.'; then
    log "installing docker-compose (v2)"
    apt_update
    "${SUDO[@]}" apt-get install -y -qq docker-compose >/dev/null
  else
    log "installing the Compose v2 plugin from Debian 13's docker-compose package"
    tmp=$(mktemp -d); chmod 755 "$tmp"
    mkdir -p "$tmp/lists/partial" "$tmp/deb"
    echo "deb $(debian_mirror) trixie main" > "$tmp/sources.list"
    o=(-o "Dir::State::Lists=$tmp/lists" -o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=/dev/null" -o "APT::Sandbox::User=root")
    "${SUDO[@]}" apt-get "${o[@]}" update -qq >/dev/null
    (cd "$tmp/deb" && "${SUDO[@]}" apt-get "${o[@]}" download -qq docker-compose >/dev/null 2>&1)
    dpkg -x "$tmp"/deb/docker-compose_*.deb "$tmp/x"
    "${SUDO[@]}" mkdir -p "$PLUGIN_DIR"
    "${SUDO[@]}" install -m 0755 "$tmp/x/usr/libexec/docker/cli-plugins/docker-compose" "$PLUGIN_DIR/docker-compose"
    rm -rf "$tmp"
  fi
  # the docker CLI may not look in /usr/local/lib: link the plugin into the usual places
  for d in /usr/libexec/docker/cli-plugins /usr/lib/docker/cli-plugins; do
    if [ -x "$PLUGIN_DIR/docker-compose" ] && [ ! -e "$d/docker-compose" ]; then
      "${SUDO[@]}" mkdir -p "$d"; "${SUDO[@]}" ln -s "$PLUGIN_DIR/docker-compose" "$d/docker-compose"
    fi
  done
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/dockerd.log)"
  "${SUDO[@]}" sh -c 'setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &'
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  if ! docker info >/dev/null 2>&1; then
    log "dockerd did not come up; the end of its log:"
    tail -20 /var/log/dockerd.log >&2
    exit 1
  fi
fi
log "docker engine $(docker version --format '{{.Server.Version}}'), $(docker compose version)"

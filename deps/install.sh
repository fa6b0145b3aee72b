#!/usr/bin/env bash
# Install the system packages of deps/debian.txt that are missing.
#
#   deps/install.sh          as root on Debian: apt-get install the missing
#                            ones; otherwise say which are missing and exit 0
#                            (`make run` then starts without what needs them)
#   deps/install.sh --check  exit 1 if any is missing (nothing installed)
#
# .ci/run and `make system-deps` (which `make run` runs first) both call it,
# so the list lives in one place.
set -euo pipefail
cd "$(dirname "$0")"

packages=()
while read -r line; do
  line="${line%%#*}"
  line="${line//[[:space:]]/}"
  [ -n "$line" ] && packages+=("$line")
done < debian.txt

missing=()
if command -v dpkg >/dev/null 2>&1; then
  for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
else
  # Not Debian: nothing can be checked or installed here.
  echo "deps/install.sh: not a Debian system; install the equivalents of deps/debian.txt yourself" >&2
  exit 0
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "missing system packages: ${missing[*]}" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "deps/install.sh: missing system packages: ${missing[*]}" >&2
  echo "  (as root: sudo make system-deps; wac runs without the parts that need them)" >&2
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# The packages' own daemons are not used, and would hold ports: Debian's
# rtpengine-daemon listens on localhost:2223 (control), 2224, 2225 and takes
# RTP ports 30000-40000; its kamailio listens on 5060 on every address. wac
# runs both itself (wac rtpengine, wac gateway) on its configured ports, and
# the tests start their own on free ports. Neither slapd's instance nor
# PostgreSQL's cluster "main" is used either (tests/support/slapd.py,
# tests/support/postgres.py start their own servers), nor Debian's Redis on 6379
# (tests/support/redis.py starts its own), nor Debian's Janus on 8088 and
# 8188 (wac janus runs its own; the tests start theirs on free ports).
for service in rtpengine-daemon rtpengine kamailio redis-server janus; do
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now "$service" >/dev/null 2>&1 || true
  elif [ -x "/etc/init.d/$service" ]; then
    "/etc/init.d/$service" stop >/dev/null 2>&1 || true
  fi
done

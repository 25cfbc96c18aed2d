#!/usr/bin/env bash
# Installs the Debian packages freshrec's local servers and tests use, when they are missing:
# redis-server (Redis 7), Java 17 + Maven (Kafka jars), chromium (status page test),
# docker-compose (validates docker-compose.yml offline), prometheus (promtool checks and unit-tests
# the alert rules). Needs root (or sudo) for apt-get.
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v java >/dev/null || need+=(default-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v chromium >/dev/null || need+=(chromium fonts-liberation)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v promtool >/dev/null || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "missing ${need[*]}; install them (apt-get) as root" >&2; exit 1; }
  sudo="sudo"
fi
echo "[system-deps] installing ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

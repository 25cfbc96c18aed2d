#!/usr/bin/env bash
# Local Redis and single-node KRaft Kafka on 127.0.0.1, without Docker.
#
#   deploy/local/servers.sh up|down|status|fetch [redis|kafka]
#
# Knobs (environment):
#   FRESHREC_CACHE_DIR   jars and other downloads, outside the clone (~/.cache/freshrec)
#   FRESHREC_RUN_DIR     data, logs and pid files (~/.cache/freshrec/run)
#   FRESHREC_REDIS_PORT  Redis port (6379)
#   FRESHREC_KAFKA_PORT  Kafka broker port (9092); the controller listens on port + 1
#   FRESHREC_START_TIMEOUT  seconds to wait for each server to answer (90)
#
# `up` is idempotent: a server already answering on its port is left alone (and not
# stopped by `down`, which ends only the processes whose pid files it wrote).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${FRESHREC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/freshrec}
run=${FRESHREC_RUN_DIR:-$cache/run}
redis_port=${FRESHREC_REDIS_PORT:-6379}
kafka_port=${FRESHREC_KAFKA_PORT:-9092}
controller_port=$((kafka_port + 1))
timeout=${FRESHREC_START_TIMEOUT:-90}
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
kafka_libs=$cache/kafka-$kafka_version/libs
cluster_id=ZnJlc2hyZWMtbG9jYWwtMQ  # fixed: the run dir holds one local cluster

log() { printf '[servers] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_until() {  # name, logfile, command...
  local name=$1 logfile=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    if [ $SECONDS -ge $deadline ]; then
      die "$name did not answer within ${timeout}s; see its log: $logfile"
    fi
    sleep 0.3
  done
}

redis_ping() { redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG; }

redis_up() {
  if ! command -v redis-server >/dev/null; then
    log "installing Debian's redis-server"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
      die "redis-server is not installed: apt-get install redis-server"
    fi
  fi
  if redis_ping; then
    log "redis already answering on 127.0.0.1:$redis_port"
    return
  fi
  mkdir -p "$run/redis"
  # AOF on: acknowledged table writes and trainer offsets survive a Redis restart.
  redis-server --bind 127.0.0.1 --port "$redis_port" --protected-mode yes \
    --dir "$run/redis" --appendonly yes --appendfsync everysec \
    --daemonize yes --pidfile "$run/redis.pid" --logfile "$run/redis.log" \
    --save "" >/dev/null
  wait_until redis "$run/redis.log" redis_ping
  log "redis listening on 127.0.0.1:$redis_port (log: $run/redis.log)"
}

kafka_fetch() {
  if [ -f "$kafka_libs/kafka_2.13-$kafka_version.jar" ]; then return; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the Kafka jars"
  log "fetching Apache Kafka $kafka_version jars into $kafka_libs"
  mkdir -p "$kafka_libs.tmp"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$kafka_libs.tmp" -DincludeScope=runtime >&2
  rm -rf "$kafka_libs" && mv "$kafka_libs.tmp" "$kafka_libs"
}

kafka_java() {  # main class, args... (exec: run it in a subshell so $! is the JVM's pid)
  exec java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$run/kafka/log4j.properties" \
    -Dkafka.logs.dir="$run/kafka" -cp "$kafka_libs/*" "$@"
}

kafka_up() {
  kafka_fetch
  if port_open "$kafka_port"; then
    log "kafka already answering on 127.0.0.1:$kafka_port"
    return
  fi
  mkdir -p "$run/kafka/data"
  sed -e "s#@DATA@#$run/kafka/data#" -e "s#@PORT@#$kafka_port#g" \
    -e "s#@CONTROLLER_PORT@#$controller_port#g" \
    "$here/kafka.properties" >"$run/kafka/server.properties"
  sed -e "s#@LOG@#$run/kafka/server.log#" "$here/log4j.properties" >"$run/kafka/log4j.properties"
  if [ ! -f "$run/kafka/data/meta.properties" ]; then
    (kafka_java kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$run/kafka/server.properties") >"$run/kafka/format.log" 2>&1 ||
      die "formatting Kafka storage failed; see $run/kafka/format.log"
  fi
  # readiness is read from this run's log only: keep the last run's log beside it
  if [ -f "$run/kafka/server.log" ]; then mv "$run/kafka/server.log" "$run/kafka/server.log.prev"; fi
  (kafka_java kafka.Kafka "$run/kafka/server.properties") </dev/null >"$run/kafka/stdout.log" 2>&1 &
  echo $! >"$run/kafka.pid"
  wait_until kafka "$run/kafka/server.log" kafka_ready
  log "kafka listening on 127.0.0.1:$kafka_port (log: $run/kafka/server.log)"
}

kafka_ready() {
  pid_alive "$run/kafka.pid" || die "kafka exited during start; see $run/kafka/server.log and $run/kafka/stdout.log"
  port_open "$kafka_port" && grep -q "Kafka Server started" "$run/kafka/server.log" 2>/dev/null
}

stop_pid() {  # name, pidfile
  local name=$1 pidfile=$2
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    return
  fi
  local pid
  pid=$(cat "$pidfile")
  kill "$pid"
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      log "$name (pid $pid) ignored SIGTERM for 30s; killing"
      kill -9 "$pid" 2>/dev/null || true
    fi
    sleep 0.2
  done
  rm -f "$pidfile"
  log "$name stopped"
}

status() {
  local rc=0
  if redis_ping; then echo "redis  up    127.0.0.1:$redis_port"; else echo "redis  down  127.0.0.1:$redis_port"; rc=1; fi
  if port_open "$kafka_port"; then echo "kafka  up    127.0.0.1:$kafka_port"; else echo "kafka  down  127.0.0.1:$kafka_port"; rc=1; fi
  return $rc
}

cmd=${1:-status}
what=${2:-all}
case "$cmd" in
  up)
    [ "$what" = kafka ] || redis_up
    [ "$what" = redis ] || kafka_up
    ;;
  down)
    [ "$what" = redis ] || stop_pid kafka "$run/kafka.pid"
    [ "$what" = kafka ] || stop_pid redis "$run/redis.pid"
    ;;
  status) status ;;
  fetch) kafka_fetch ;;
  *) die "usage: $0 up|down|status|fetch [redis|kafka]" ;;
esac

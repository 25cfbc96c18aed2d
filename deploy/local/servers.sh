#!/usr/bin/env bash
# Local Redis and KRaft Kafka on 127.0.0.1, without Docker: one node of each (the default) or
# a cluster of each (docs/scaling.md, "Topology").
#
#   deploy/local/servers.sh up|down|status|fetch [redis|kafka]
#
# Knobs (environment):
#   FRESHREC_TOPOLOGY    single (default): one Redis, one Kafka node (broker + controller);
#                        cluster: a Redis Cluster (3 masters + 3 replicas) and a 3-node Kafka
#                        (each node broker + controller). Each topology has its own ports and
#                        pid files; `down` and `status` act on the one named here.
#   FRESHREC_CACHE_DIR   jars and other downloads, outside the clone (~/.cache/freshrec)
#   FRESHREC_RUN_DIR     data, logs and pid files (~/.cache/freshrec/run; the cluster's in
#                        its cluster/ subdirectory)
#   FRESHREC_REDIS_PORT  Redis port (6379)                                          [single]
#   FRESHREC_KAFKA_PORT  Kafka broker port (9092); the controller listens on port + 1 [single]
#   FRESHREC_REDIS_CLUSTER_PORT      first Redis Cluster node's port (7000): the 6 nodes listen
#                        on port .. port + 5 (7000..7005)                          [cluster]
#   FRESHREC_REDIS_CLUSTER_BUS_PORT  first node's cluster bus port (Redis Cluster port +
#                        10000: 17000..17005)                                      [cluster]
#   FRESHREC_REDIS_CLUSTER_NODE_TIMEOUT  milliseconds before an unreachable master is failed
#                        over to its replica (2000; Redis's own default is 15000)  [cluster]
#   FRESHREC_KAFKA_CLUSTER_PORT      first Kafka node's broker port (9192): node n = 1..3 serves
#                        clients on port + 2(n-1) (9192, 9194, 9196) and its controller on the
#                        port after (9193, 9195, 9197)                             [cluster]
#   FRESHREC_START_TIMEOUT  seconds to wait for each server (or cluster) to answer (90)
#
# `up` is idempotent: a server already answering on its port is left alone (and not
# stopped by `down`, which ends only the processes whose pid files it wrote). On the cluster
# topology `up` starts the nodes that do not answer (a killed node rejoins on its data),
# joins the Redis nodes into a cluster only when none of them is in one yet, and returns once
# every Redis node reports cluster_state:ok with 3 masters each followed by a synced replica,
# and every Kafka node lists 3 live brokers.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${FRESHREC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/freshrec}
run=${FRESHREC_RUN_DIR:-$cache/run}
topology=${FRESHREC_TOPOLOGY:-single}
redis_port=${FRESHREC_REDIS_PORT:-6379}
kafka_port=${FRESHREC_KAFKA_PORT:-9092}
controller_port=$((kafka_port + 1))
timeout=${FRESHREC_START_TIMEOUT:-90}
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
kafka_libs=$cache/kafka-$kafka_version/libs
cluster_id=ZnJlc2hyZWMtbG9jYWwtMQ  # fixed: the run dir holds one local cluster
kafka_heap=(-Xms256m -Xmx1g)

# the cluster topology: its own ports, and its data, logs and pid files under $crun
crun=$run/cluster
rc_base=${FRESHREC_REDIS_CLUSTER_PORT:-7000}
rc_bus=${FRESHREC_REDIS_CLUSTER_BUS_PORT:-$((rc_base + 10000))}
rc_node_timeout=${FRESHREC_REDIS_CLUSTER_NODE_TIMEOUT:-2000}
rc_ports=()
for i in 0 1 2 3 4 5; do rc_ports+=($((rc_base + i))); done
kc_base=${FRESHREC_KAFKA_CLUSTER_PORT:-9192}
kc_nodes=(1 2 3)
kc_cluster_id=ZnJlc2hyZWMtY2x1c3Rlcg  # "freshrec-cluster": one id for the three nodes' storage

log() { printf '[servers] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "$topology" in
  single | cluster) ;;
  *) die "FRESHREC_TOPOLOGY must be single or cluster, not '$topology'" ;;
esac
if [ "$topology" = cluster ]; then kafka_heap=(-Xms128m -Xmx512m); fi

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

redis_install() {
  if ! command -v redis-server >/dev/null; then
    log "installing Debian's redis-server"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
      die "redis-server is not installed: apt-get install redis-server"
    fi
  fi
}

redis_up() {
  redis_install
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

kafka_java() {  # node dir, main class, args... (exec: run it in a subshell so $! is the JVM's pid)
  local dir=$1; shift
  exec java "${kafka_heap[@]}" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$dir/log4j.properties" \
    -Dkafka.logs.dir="$dir" -cp "$kafka_libs/*" "$@"
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
    (kafka_java "$run/kafka" kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$run/kafka/server.properties") >"$run/kafka/format.log" 2>&1 ||
      die "formatting Kafka storage failed; see $run/kafka/format.log"
  fi
  # readiness is read from this run's log only: keep the last run's log beside it
  if [ -f "$run/kafka/server.log" ]; then mv "$run/kafka/server.log" "$run/kafka/server.log.prev"; fi
  (kafka_java "$run/kafka" kafka.Kafka "$run/kafka/server.properties") </dev/null >"$run/kafka/stdout.log" 2>&1 &
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

stop_pids() {  # name=pidfile...: SIGTERM to all at once (a cluster stops in parallel), then wait
  local item name pidfile pid
  local -a names=() pids=() pidfiles=()
  for item in "$@"; do
    name=${item%%=*} pidfile=${item#*=}
    if pid_alive "$pidfile"; then
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      names+=("$name") pids+=("$pid")
    fi
    pidfiles+=("$pidfile")
  done
  local deadline=$((SECONDS + 30)) i alive
  while :; do
    alive=0
    for i in "${!pids[@]}"; do
      if kill -0 "${pids[$i]}" 2>/dev/null; then
        alive=1
        if [ $SECONDS -ge $deadline ]; then
          log "${names[$i]} (pid ${pids[$i]}) ignored SIGTERM for 30s; killing"
          kill -9 "${pids[$i]}" 2>/dev/null || true
        fi
      fi
    done
    [ $alive = 1 ] || break
    sleep 0.2
  done
  rm -f "${pidfiles[@]}"
  for name in "${names[@]}"; do log "$name stopped"; done
}

# ---------------------------------------------------------------- Redis Cluster

rcli() { redis-cli -h 127.0.0.1 -p "$@" 2>/dev/null | tr -d '\r'; }

rc_ping() { rcli "$1" ping | grep -q PONG; }

rc_info() { rcli "$1" cluster info; }

rc_fresh() {  # the node is in no cluster yet: it knows only itself and serves no slot
  local info
  info=$(rc_info "$1")
  grep -q '^cluster_known_nodes:1$' <<<"$info" && grep -q '^cluster_slots_assigned:0$' <<<"$info"
}

rc_node_healthy() {  # one node's view: state ok, 3 masters each with a connected replica
  local port=$1 info
  info=$(rc_info "$port")
  grep -q '^cluster_state:ok$' <<<"$info" || return 1
  grep -q '^cluster_slots_assigned:16384$' <<<"$info" || return 1
  rcli "$port" cluster nodes | awk '
    $3 ~ /fail|handshake|noaddr/ { next }
    $3 ~ /master/ && NF >= 9 { master[$1] = 1 }
    $3 ~ /slave/ && $8 == "connected" { replicas[$4]++ }
    END { n = 0; m = 0
          for (id in master) { m++; if (replicas[id] >= 1) n++ }
          exit !(m == 3 && n == 3) }' || return 1
  # a replica counts once its initial sync is done: only then can it take over
  info=$(rcli "$port" info replication)
  if grep -q '^role:slave$' <<<"$info"; then grep -q '^master_link_status:up$' <<<"$info" || return 1; fi
}

rc_healthy() {
  local port
  for port in "${rc_ports[@]}"; do rc_node_healthy "$port" || return 1; done
}

rc_node_up() {  # index 0..5
  local port=${rc_ports[$1]} dir=$crun/redis-${rc_ports[$1]}
  mkdir -p "$dir"
  # AOF on, as on the single node; nodes.conf (the node's view of the cluster) lives in its
  # dir, so a restarted node rejoins as what the cluster made it meanwhile
  redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes \
    --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-port "$((rc_bus + $1))" --cluster-node-timeout "$rc_node_timeout" \
    --dir "$dir" --appendonly yes --appendfsync everysec --save "" \
    --daemonize yes --pidfile "$crun/redis-$port.pid" --logfile "$dir/redis.log" >/dev/null
}

rc_all_ping() {
  local port
  for port in "${rc_ports[@]}"; do rc_ping "$port" || return 1; done
}

redis_cluster_up() {
  redis_install
  mkdir -p "$crun"
  local i port started=0 fresh=0
  for i in "${!rc_ports[@]}"; do
    port=${rc_ports[$i]}
    if rc_ping "$port"; then continue; fi
    rc_node_up "$i"
    started=$((started + 1))
  done
  wait_until "redis cluster nodes" "$crun/redis-<port>/redis.log" rc_all_ping
  for port in "${rc_ports[@]}"; do
    rc_info "$port" | grep -q '^cluster_state:' ||
      die "127.0.0.1:$port answers but is not a Redis Cluster node"
  done
  if [ $started = 0 ] && rc_healthy; then
    log "redis cluster already healthy on 127.0.0.1:${rc_ports[0]}..${rc_ports[5]}"
    return
  fi
  for port in "${rc_ports[@]}"; do
    if rc_fresh "$port"; then fresh=$((fresh + 1)); fi
  done
  if [ $fresh = ${#rc_ports[@]} ]; then
    local -a nodes=()
    for port in "${rc_ports[@]}"; do nodes+=("127.0.0.1:$port"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
      >"$crun/redis-create.log" 2>&1 ||
      die "redis-cli --cluster create failed; see $crun/redis-create.log"
    log "redis cluster created: 3 masters + 3 replicas"
  elif [ $fresh != 0 ]; then
    die "$fresh of the Redis nodes on ${rc_ports[0]}..${rc_ports[5]} are in no cluster while the others are; remove $crun/redis-* (all the cluster's data) to start over, or add them with redis-cli --cluster add-node"
  fi
  wait_until "redis cluster (cluster_state:ok, 3 masters with a synced replica each)" \
    "$crun/redis-<port>/redis.log" rc_healthy
  log "redis cluster healthy on 127.0.0.1:${rc_ports[0]}..${rc_ports[5]} (started $started node(s); logs: $crun/redis-<port>/redis.log)"
}

redis_cluster_down() {
  local port items=()
  for port in "${rc_ports[@]}"; do items+=("redis node $port=$crun/redis-$port.pid"); done
  stop_pids "${items[@]}"
}

redis_cluster_status() {
  local port rc=0 role state
  for port in "${rc_ports[@]}"; do
    if rc_ping "$port"; then
      role=$(rcli "$port" role | head -n 1)
      [ "$role" = slave ] && role=replica
      state=$(rc_info "$port" | grep '^cluster_state:' || true)
      printf 'redis  up    127.0.0.1:%s  %-7s  %s\n' "$port" "$role" "$state"
    else
      echo "redis  down  127.0.0.1:$port"
      rc=1
    fi
  done
  if [ $rc = 0 ] && rc_healthy; then
    echo "redis cluster ok: 3 masters, each with a synced replica"
  else
    echo "redis cluster NOT ready"
    rc=1
  fi
  return $rc
}

# ---------------------------------------------------------------- Kafka cluster

kc_port() { echo $((kc_base + 2 * ($1 - 1))); }

kc_brokers() { python3 "$here/kafka-brokers.py" "$(kc_port "$1")" 2>/dev/null | wc -l; }

kc_voters() {
  local n voters=""
  for n in "${kc_nodes[@]}"; do voters+="${voters:+,}$n@127.0.0.1:$(($(kc_port "$n") + 1))"; done
  echo "$voters"
}

kc_ready() {  # nodes started by this call: must stay alive
  local n
  for n in "$@"; do
    pid_alive "$crun/kafka-$n.pid" ||
      die "kafka node $n exited during start; see $crun/kafka-$n/server.log and $crun/kafka-$n/stdout.log"
  done
  for n in "${kc_nodes[@]}"; do [ "$(kc_brokers "$n")" = ${#kc_nodes[@]} ] || return 1; done
}

kafka_cluster_up() {
  kafka_fetch
  command -v python3 >/dev/null || die "python3 is needed to probe the Kafka cluster"
  mkdir -p "$crun"
  local n port dir voters
  local -a started=() formats=()
  voters=$(kc_voters)
  for n in "${kc_nodes[@]}"; do
    port=$(kc_port "$n") dir=$crun/kafka-$n
    if port_open "$port"; then
      log "kafka node $n already answering on 127.0.0.1:$port"
      continue
    fi
    mkdir -p "$dir/data"
    sed -e "s#@DATA@#$dir/data#" -e "s#@PORT@#$port#g" -e "s#@NODE_ID@#$n#g" \
      -e "s#@CONTROLLER_PORT@#$((port + 1))#g" -e "s#@VOTERS@#$voters#g" \
      "$here/kafka-cluster.properties" >"$dir/server.properties"
    sed -e "s#@LOG@#$dir/server.log#" "$here/log4j.properties" >"$dir/log4j.properties"
    if [ ! -f "$dir/data/meta.properties" ]; then
      (kafka_java "$dir" kafka.tools.StorageTool format -t "$kc_cluster_id" \
        -c "$dir/server.properties") >"$dir/format.log" 2>&1 &
      formats+=("$n=$!")
    fi
    started+=("$n")
  done
  local item
  for item in "${formats[@]}"; do
    wait "${item#*=}" || die "formatting Kafka node ${item%%=*}'s storage failed; see $crun/kafka-${item%%=*}/format.log"
  done
  for n in "${started[@]}"; do
    dir=$crun/kafka-$n
    if [ -f "$dir/server.log" ]; then mv "$dir/server.log" "$dir/server.log.prev"; fi
    (kafka_java "$dir" kafka.Kafka "$dir/server.properties") </dev/null >"$dir/stdout.log" 2>&1 &
    echo $! >"$crun/kafka-$n.pid"
  done
  wait_until "kafka cluster (3 live brokers seen by every node)" "$crun/kafka-<n>/server.log" \
    kc_ready "${started[@]}"
  if [ ${#started[@]} = 0 ]; then
    log "kafka cluster already serving: 3 brokers"
  else
    log "kafka cluster serving: 3 brokers on $(kc_bootstrap) (started node(s) ${started[*]}; logs: $crun/kafka-<n>/server.log)"
  fi
}

kc_bootstrap() {
  local n b=""
  for n in "${kc_nodes[@]}"; do b+="${b:+,}127.0.0.1:$(kc_port "$n")"; done
  echo "$b"
}

kafka_cluster_down() {
  local n items=()
  for n in "${kc_nodes[@]}"; do items+=("kafka node $n=$crun/kafka-$n.pid"); done
  stop_pids "${items[@]}"
}

kafka_cluster_status() {
  local n port rc=0
  for n in "${kc_nodes[@]}"; do
    port=$(kc_port "$n")
    if port_open "$port"; then
      echo "kafka  up    127.0.0.1:$port  node $n (controller 127.0.0.1:$((port + 1)))  sees $(kc_brokers "$n") live broker(s)"
    else
      echo "kafka  down  127.0.0.1:$port  node $n"
      rc=1
    fi
  done
  return $rc
}

status() {
  local rc=0
  if redis_ping; then echo "redis  up    127.0.0.1:$redis_port"; else echo "redis  down  127.0.0.1:$redis_port"; rc=1; fi
  if port_open "$kafka_port"; then echo "kafka  up    127.0.0.1:$kafka_port"; else echo "kafka  down  127.0.0.1:$kafka_port"; rc=1; fi
  return $rc
}

cluster_status() {
  local rc=0
  [ "$what" = kafka ] || redis_cluster_status || rc=1
  [ "$what" = redis ] || kafka_cluster_status || rc=1
  return $rc
}

cmd=${1:-status}
what=${2:-all}
case "$what" in all | redis | kafka) ;; *) die "usage: $0 up|down|status|fetch [redis|kafka]" ;; esac
case "$topology:$cmd" in
  single:up)
    [ "$what" = kafka ] || redis_up
    [ "$what" = redis ] || kafka_up
    ;;
  single:down)
    [ "$what" = redis ] || stop_pid kafka "$run/kafka.pid"
    [ "$what" = kafka ] || stop_pid redis "$run/redis.pid"
    ;;
  single:status) status ;;
  cluster:up)
    [ "$what" = kafka ] || redis_cluster_up
    [ "$what" = redis ] || kafka_cluster_up
    ;;
  cluster:down)
    [ "$what" = redis ] || kafka_cluster_down
    [ "$what" = kafka ] || redis_cluster_down
    ;;
  cluster:status) cluster_status ;;
  *:fetch) kafka_fetch ;;
  *) die "usage: $0 up|down|status|fetch [redis|kafka]" ;;
esac

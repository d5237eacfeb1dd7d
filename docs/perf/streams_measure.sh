#!/bin/bash
# One cell of docs/perf/streams.md: a server pinned to core 0, `turnstone bench` pinned to core 1,
# server CPU (utime + stime, all threads) over the run from /proc/PID/stat.
# usage: CERT_DIR=dir-with-cert.pem-and-key.pem streams_measure.sh turnstone|coturn SERVER_BIN RATE ALLOCS PAYLOAD SECS [udp|tcp|tls]
set -u
KIND=$1; BIN=$2; RATE=$3; ALLOCS=$4; PAYLOAD=$5; DUR=$6; TR=${7:-tcp}
PORT=$((20000 + RANDOM % 10000))
D=$(mktemp -d)
if [ "$KIND" = turnstone ]; then
cat > $D/t.toml <<CFG
[server]
realm = "bench.test"
workers = 1
[log]
level = "warn"
[[listen]]
protocol = "udp"
address = "127.0.0.1:$PORT"
[[listen]]
protocol = "tcp"
address = "127.0.0.1:$PORT"
[[listen]]
protocol = "tls"
address = "127.0.0.1:$((PORT+1))"
certificate = "${CERT_DIR:?}/cert.pem"
private_key = "${CERT_DIR:?}/key.pem"
[admin]
enabled = false
[relay]
address = "127.0.0.1"
ports = "2000-16999"
[auth]
[[auth.users]]
name = "alice"
password = "wonderland"
[peers]
allow = ["127.0.0.0/8"]
[limits]
requests_per_second_per_ip = 200000
request_burst_per_ip = 200000
max_allocation_bitrate = "1Gbps"
max_total_bitrate = "40Gbps"
max_allocations_per_user = 20000
CFG
taskset -c 0 $BIN serve --config $D/t.toml 2>$D/server.log &
else
taskset -c 0 turnserver -n --listening-ip=127.0.0.1 --listening-port=$PORT --relay-ip=127.0.0.1 --min-port=17000 --max-port=32000 --realm=bench.test --lt-cred-mech --allow-loopback-peers --no-cli --no-dtls --tls-listening-port=$((PORT+1)) --cert=${CERT_DIR:?}/cert.pem --pkey=${CERT_DIR:?}/key.pem --relay-threads=1 --user-quota=0 --total-quota=0 --max-bps=0 --bps-capacity=0 --no-stdout-log --simple-log --log-file=/dev/null --user=alice:wonderland --pidfile=$D/c.pid --db=$D/c.sqlite 2>$D/server.log &
fi
SPID=$!
SPORT=$PORT; TLSOPT=""
if [ "$TR" = tls ]; then SPORT=$((PORT+1)); TLSOPT="--tls-insecure"; fi
sleep 1.5
cpu() { awk '{print $14+$15}' /proc/$SPID/stat; }
C0=$(cpu)
taskset -c 1 ${GEN:-target/release/turnstone} bench --server 127.0.0.1:$SPORT --transport $TR $TLSOPT --user alice --password wonderland --allocations $ALLOCS --rate $RATE --payload $PAYLOAD --duration $DUR --warmup 0 --json > $D/out.json 2>$D/gen.err
C1=$(cpu)
kill $SPID; wait $SPID 2>/dev/null
TICKS=$(getconf CLK_TCK)
echo "kind=$KIND bin=$(basename $BIN) tr=$TR cpu_ticks=$((C1-C0)) tck=$TICKS dir=$D"
cat $D/out.json

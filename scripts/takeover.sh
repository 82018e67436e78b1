#!/usr/bin/env bash
# Takeover time with the default lease (PostgreSQL from scripts/pg.sh start): two replicas, the leader SIGKILLed (or SIGSTOPped), time
# until the other answers leader on /healthz. Usage: takeover.sh BINARY KILL|STOP
set -eu
B=$1; SIG=$2
ADMIN=${ADMIN:-$(bash "$(dirname "$0")/pg.sh" url)}
DB=to_$RANDOM$RANDOM
psql $ADMIN -Xqc "CREATE DATABASE $DB"
D=$(mktemp -d)
for r in a b; do
  RUST_LOG=warn $B server --listen 127.0.0.1:0 --data-dir $D/$r --database-url ${ADMIN%/*}/$DB --local-runtime process > $D/$r.log 2>&1 &
  echo $! > $D/$r.pid
  sleep 1.5
done
A=$(grep -o "http://[0-9.:]*" $D/a.log | head -1); Bu=$(grep -o "http://[0-9.:]*" $D/b.log | head -1)
until curl -s $A/healthz | grep -q leader; do sleep 0.1; done
sleep $(( RANDOM % 4 )).$(( RANDOM % 10 ))
kill -$SIG $(cat $D/a.pid); T0=$(date +%s%N)
until curl -s $Bu/healthz | grep -q leader; do sleep 0.05; done
echo "takeover $(( ($(date +%s%N)-T0)/1000000 )) ms ($SIG)"
kill -9 $(cat $D/a.pid) $(cat $D/b.pid) 2>/dev/null || true
wait 2>/dev/null || true
psql $ADMIN -Xqc "DROP DATABASE $DB WITH (FORCE)"
rm -rf $D

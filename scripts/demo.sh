#!/usr/bin/env bash
# `make demo`: the whole pipeline once, on the local stack (already up and set up by make).
#  1. 1,000 orders and 1,000 payments are published; every 5th payment pays an order that
#     does not exist yet;
#  2. both consumers run until idle: orders written, payments applied, orphans dead-lettered;
#  3. the late orders arrive; the DLQ replay applies the payments that were waiting for them;
#  4. a summary, the audit, a few rows, and the cqlsh command to look at the rest.
# Every script serves /metrics on the port monitoring/prometheus.yml scrapes; where Prometheus is
# installed, `make observe` runs it and the last lines give the URL of a graph of this run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export GOOGLE_CLOUD_PROJECT="${GOOGLE_CLOUD_PROJECT:-ecom-local}" PUBSUB_EMULATOR_HOST="${PUBSUB_EMULATOR_HOST:-127.0.0.1:8085}"
export CASSANDRA_HOSTS="${CASSANDRA_HOSTS:-127.0.0.1}" CASSANDRA_PORT="${CASSANDRA_PORT:-9042}" CASSANDRA_KEYSPACE="${CASSANDRA_KEYSPACE:-ecom_store}"
LOGS=.stack/demo
mkdir -p "$LOGS"
IDLE=5
# Each run takes its own order ids, so a second demo shows every path again: S .. S+999.
S=$(( $(date +%s) * 1000 + 1 ))
LATE=$(( S + 1000000000 ))
final() { grep -h "final:" "$1" | tail -1 | sed 's/.*final: //'; }
if command -v prometheus >/dev/null; then $PY stack/localstack.py observe >"$LOGS/prometheus.log" 2>&1; fi

echo "== 1. producing 1,000 orders and 1,000 payments for order ids $S.. (seed 42)"
$PY order_data_producer.py --metrics-port 9104 --count 1000 --rate 0 --seed 42 --start-id $S >"$LOGS/orders_producer.log" 2>&1
$PY payments_data_producer.py --metrics-port 9105 --count 1000 --rate 0 --seed 42 --start-id $S >"$LOGS/payments_producer.log" 2>&1
echo "   orders:   $(final "$LOGS/orders_producer.log")"
echo "   payments: $(final "$LOGS/payments_producer.log")"

echo "== 2. consuming until idle (${IDLE} s)"
$PY order_data_consumer.py --metrics-port 9101 --exit-after-idle $IDLE >"$LOGS/order_consumer.log" 2>&1
$PY ingest_in_fact_table.py --metrics-port 9102 --exit-after-idle $IDLE >"$LOGS/payment_consumer.log" 2>&1
echo "   order consumer:   $(final "$LOGS/order_consumer.log")"
echo "   payment consumer: $(final "$LOGS/payment_consumer.log")"

echo "== 3. the late orders arrive (ids from $LATE), then the DLQ replay"
$PY order_data_producer.py --metrics-port 9104 --count 1000 --rate 0 --seed 43 --start-id $LATE >"$LOGS/late_orders_producer.log" 2>&1
$PY order_data_consumer.py --metrics-port 9101 --exit-after-idle $IDLE >"$LOGS/late_order_consumer.log" 2>&1
$PY replay_dlq_payments.py --metrics-port 9103 --exit-after-idle $IDLE >"$LOGS/replay.log" 2>&1
echo "   order consumer:   $(final "$LOGS/late_order_consumer.log")"
echo "   DLQ replay:       $(final "$LOGS/replay.log")"

echo "== 4. summary"
$PY -m ecom_pipeline.admin --log-level WARNING audit --first-id $S --last-id $(( S + 999 )) | sed 's/^/   /'
echo "   (every 5th of these orders has no payment: that payment paid order id + 1,000,000,000, a late order)"
.venv/bin/cqlsh "${CASSANDRA_HOSTS%%,*}" "$CASSANDRA_PORT" -e "SELECT order_id, item, price, order_status, payment_method, card_last_four, payment_status FROM ${CASSANDRA_KEYSPACE}.orders_payments_facts WHERE order_id IN ($S, $(( S + 1 )), $(( S + 4 )), $(( LATE + 4 )));"
echo "Look at the rest:  .venv/bin/cqlsh ${CASSANDRA_HOSTS%%,*} $CASSANDRA_PORT -e \"SELECT * FROM ${CASSANDRA_KEYSPACE}.orders_payments_facts LIMIT 20\""
echo "Logs of this run:  $LOGS/"
if command -v prometheus >/dev/null; then
  echo "Metrics of this run in Prometheus: http://127.0.0.1:9090/graph?g0.expr=sum%20by%20(script%2C%20outcome)%20(ecom_pipeline_messages_total%7Boutcome%3D~%22applied%7Cdead_lettered%22%7D)&g0.tab=0&g0.range_input=2m"
else
  echo "Install Prometheus (apt-get install prometheus) and run make demo again to see this run's metrics graphed."
fi

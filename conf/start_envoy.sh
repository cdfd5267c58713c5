#!/bin/sh
# The start script Envoy's own restarter/hot-restarter.py runs, for
# txenvoy as for Envoy (get the restarter from Envoy's repository,
# https://github.com/envoyproxy/envoy/blob/main/restarter/hot-restarter.py;
# tests/e2e/restarter/ holds an unchanged copy):
#
#   python3 hot-restarter.py conf/start_envoy.sh   # starts epoch 0
#   kill -HUP <restarter pid>     # starts the next epoch: no connection refused
#   kill -TERM <restarter pid>    # stops every epoch
#
# hot-restarter.py runs this script with no argument and RESTART_EPOCH in
# its environment (0, then one more on each SIGHUP). The settings below are
# read from the restarter's environment, with these defaults (demo.yaml is
# conf/demo.yaml, run from the repository's top folder).
exec ${TWISTD:-twistd} -n --pidfile= envoy \
    -c "${ENVOY_CONFIG:-conf/demo.yaml}" \
    --restart-epoch "$RESTART_EPOCH" --base-id "${BASE_ID:-1}" \
    --drain-time-s "${DRAIN_TIME_S:-30}" \
    --parent-shutdown-time-s "${PARENT_SHUTDOWN_TIME_S:-45}" \
    $TXENVOY_ARGS

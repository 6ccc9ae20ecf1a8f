#!/bin/sh
# The `cluster` profile's one-shot: join valkey-c1..c6 into 3 primaries with a replica each.
# Does nothing if the cluster already exists (a second `up`), so it can run on every start.
# Node addresses are resolved here: CLUSTER MEET takes addresses, not names; clients are told
# the nodes' host names (`cluster-preferred-endpoint-type hostname` in compose.yaml).
set -eu
export REDISCLI_AUTH="$REDIS_PASSWORD"  # not on the command line, which `ps` shows
NODES="valkey-c1 valkey-c2 valkey-c3 valkey-c4 valkey-c5 valkey-c6"

cluster_ok() {
    valkey-cli -h valkey-c1 cluster info | grep -q '^cluster_state:ok'
}

if cluster_ok; then
    echo "cluster exists"
    exit 0
fi
addresses=""
for node in $NODES; do
    address=$(getent hosts "$node" | awk '{print $1; exit}')
    [ -n "$address" ] || { echo "cannot resolve $node" >&2; exit 1; }
    addresses="$addresses $address:6379"
done
# The first three become primaries, each of the last three a replica of one of them.
# shellcheck disable=SC2086  # one word per node
valkey-cli --cluster create $addresses --cluster-replicas 1 --cluster-yes
for _ in $(seq 60); do
    cluster_ok && { echo "cluster ready"; exit 0; }
    sleep 1
done
echo "cluster not ok 60 s after creating it" >&2
exit 1

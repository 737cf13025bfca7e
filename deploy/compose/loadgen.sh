#!/bin/bash
# The compose demo's load generator: pgbench against Lifeguard on 127.0.0.1:6432 (this container shares
# Lifeguard's network namespace, like an application container in its pod), alternating a busy minute (more
# clients than the pool allows, so clients wait) with a quiet one. The tables are created directly on PostgreSQL.
set -euo pipefail

export PGUSER=${PGUSER:-app} PGDATABASE=${PGDATABASE:-appdb}
until pg_isready -q -h postgres; do sleep 1; done
if ! PGPASSWORD=$POSTGRES_PASSWORD psql -h postgres -Atqc "select 1 from pgbench_branches limit 1" >/dev/null 2>&1; then
    PGPASSWORD=$POSTGRES_PASSWORD pgbench -h postgres -i -s 5 -q
fi
until pg_isready -q -h 127.0.0.1 -p 6432; do sleep 1; done

while :; do
    echo "busy: 20 clients for 60s"
    pgbench -h 127.0.0.1 -p 6432 -n -c 20 -j 2 -T 60 -P 15 || echo "pgbench exited with $?"
    echo "quiet: 2 clients at 20 transactions/s for 60s"
    pgbench -h 127.0.0.1 -p 6432 -n -c 2 -j 1 -T 60 -R 20 -P 15 || echo "pgbench exited with $?"
done

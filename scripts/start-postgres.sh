#!/usr/bin/env bash
# Start Debian's PostgreSQL 15 (installed but stopped on a fresh machine) and create the role and
# database the tests use. Idempotent; a no-op when SIGNALMAIL_PG_URL points somewhere else.
set -euo pipefail

if [[ -n "${SIGNALMAIL_PG_URL:-}" ]]; then
    echo "start-postgres: SIGNALMAIL_PG_URL is set, using that server"
    exit 0
fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "start-postgres: pg_ctlcluster not found; Postgres tests will be skipped" >&2
    exit 0
fi

# Already up with the test role and database (a second run, or a developer's own server): done,
# without needing root for pg_ctlcluster or `su postgres`.
if command -v psql >/dev/null 2>&1 && PGPASSWORD=signalmail PGCONNECT_TIMEOUT=3 psql -qAt \
    -h 127.0.0.1 -p 5432 -U signalmail -d signalmail_test -c "select 1" >/dev/null 2>&1; then
    echo "start-postgres: ready at postgresql://signalmail@127.0.0.1:5432/signalmail_test"
    exit 0
fi
if [[ "$(id -u)" != "0" ]]; then
    echo "start-postgres: not root, so cannot start PostgreSQL or create the test role;" \
        "run 'sudo scripts/start-postgres.sh' once (Postgres tests skip until then)" >&2
    exit 0
fi

version="${PG_VERSION:-15}"
if ! pg_lsclusters --no-header | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
    pg_ctlcluster "$version" main start
fi
# Wait on readiness, not on time.
for _ in $(seq 1 100); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 0.1
done
pg_isready -h 127.0.0.1 -p 5432

psql_admin() { su postgres -c "psql -v ON_ERROR_STOP=1 -qAt -c \"$1\""; }
if [[ "$(psql_admin "select 1 from pg_roles where rolname = 'signalmail'")" != "1" ]]; then
    psql_admin "create role signalmail login createdb password 'signalmail'"
fi
if [[ "$(psql_admin "select 1 from pg_database where datname = 'signalmail_test'")" != "1" ]]; then
    psql_admin "create database signalmail_test owner signalmail"
fi
echo "start-postgres: ready at postgresql://signalmail@127.0.0.1:5432/signalmail_test"

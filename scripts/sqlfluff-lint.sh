#!/usr/bin/env bash
# Lint the dbt project's SQL with SQLFluff's dbt templater (settings: dbt_project/.sqlfluff).
# The templater compiles each model with dbt against an in-memory DuckDB: no warehouse file,
# server or network. With no arguments it lints models/ and tests/ in two processes; arguments
# replace that and go to `sqlfluff lint` (e.g. one model's path).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/dbt_project"
if [ "$#" -eq 0 ]; then
    set -- --processes 2 models tests
fi
SIGNALMAIL_DUCKDB_PATH=:memory: exec "$root/.venv/bin/sqlfluff" lint --disable-progress-bar "$@"

{#-
    The send ledger as a dbt source: attached read-only on DuckDB for the length of a dbt
    invocation. Docs: send_ledger.yml.
-#}

{% macro attach_send_ledger() -%}
    {{ return(adapter.dispatch('attach_send_ledger', 'signalmail')()) }}
{%- endmacro %}


{% macro default__attach_send_ledger() -%}
    {#- Postgres, Snowflake, BigQuery: the ledger lives in the warehouse itself. -#}
    select 1
{%- endmacro %}


{% macro duckdb__attach_send_ledger() -%}
    {#-
        The target writes the ledger into its own DuckDB file (one writer per file). Attach it
        read-only when it exists; before the first send there is no file, and the staging model
        then reads an empty ledger instead (see stg_signalmail__send_ledger).

        Detached and attached again on every invocation: a read-only attachment keeps the file
        as it was when attached, and a long-lived dbt process (`signalmail watch`) must see the
        sends the target recorded since its last tick.
    -#}
    {%- set path = env_var('SIGNALMAIL_LEDGER_PATH', '../data/ledger.duckdb') -%}
    {%- set alias = ledger_database() -%}
    {%- if execute -%}
        {%- set found = run_query("select count(*) from glob('" ~ path | replace("'", "''") ~ "')") -%}
        detach database if exists {{ alias }};
        {%- if found.columns[0].values()[0] > 0 %}
        attach '{{ path | replace("'", "''") }}' as {{ alias }} (read_only)
        {%- endif -%}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{% macro detach_send_ledger() -%}
    {{ return(adapter.dispatch('detach_send_ledger', 'signalmail')()) }}
{%- endmacro %}


{% macro default__detach_send_ledger() -%}
    select 1
{%- endmacro %}


{% macro duckdb__detach_send_ledger() -%}
    detach database if exists {{ ledger_database() }}
{%- endmacro %}


{% macro ledger_database() -%}
    {{ return(adapter.dispatch('ledger_database', 'signalmail')()) }}
{%- endmacro %}


{% macro default__ledger_database() -%}
    {{ return(var('ledger_database', target.database)) }}
{%- endmacro %}


{% macro duckdb__ledger_database() -%}
    {{ return(var('ledger_database', 'signalmail_ledger_db')) }}
{%- endmacro %}

{#-
    Near-real-time incremental helpers (see docs/signals.md, "How incremental works").

    Event-grain models keep a high-water mark on received_at and reprocess `lookback_minutes`
    before it; state models recompute every user touched at or after their own mark.
-#}

{% macro incremental_cutoff(column='received_at') -%}
    {#-
        The high-water mark of {{ this }} on `column` minus the lookback, as a timestamp literal.

        Read with one query when the model compiles and inlined as a constant, never as a
        subquery: a constant lets DuckDB skip row groups by their min/max (zone maps) and
        Postgres use an index, so a tick reads the newest rows instead of scanning all of
        history. A subquery is only evaluated at run time, after the scan is planned.
    -#}
    {%- if not execute -%}
        {{ return("cast('1900-01-01 00:00:00' as " ~ dbt.type_timestamp() ~ ")") }}
    {%- endif -%}
    {%- set query -%}
        select {{ dbt.dateadd('minute', -1 * var('lookback_minutes'), 'max(' ~ column ~ ')') }}
        from {{ this }}
    {%- endset -%}
    {%- set mark = run_query(query).columns[0].values()[0] -%}
    {%- set text = mark.strftime('%Y-%m-%d %H:%M:%S.%f') if mark is not none else '1900-01-01 00:00:00' -%}
    cast('{{ text }}' as {{ dbt.type_timestamp() }})
{%- endmacro %}


{% macro touched_users(cutoff) -%}
    {#-
        Users whose history changed at or after `cutoff`: a new event of theirs (directly or via
        a stitched anonymous id), or a newly stitched anonymous id whose past events join them.
    -#}
    select user_id from {{ ref('int_events') }}
    where received_at >= {{ cutoff }}
        and user_id is not null
    union
    select user_id from {{ ref('int_identity_map') }}
    where last_received_at >= {{ cutoff }}
{%- endmacro %}


{% macro deduplicated_source(source_name, table_name, where=none) -%}
    {#-
        The rows of a raw stream, one per message_id (the earliest received copy: SDK retries and
        append-mode loads duplicate). Incrementally only the rows received since the cutoff, minus
        messages whose first copy is already stored from before it.
    -#}
    {%- set cutoff = incremental_cutoff() if is_incremental() else none %}
    select * from (
        select
            raw_events.*,
            row_number() over (
                partition by raw_events.message_id
                order by raw_events.received_at, raw_events._spool_key, raw_events._spool_line
            ) as copy_number
        from {{ source(source_name, table_name) }} as raw_events
        where raw_events.message_id is not null
            {% if where %}and {{ where }}{% endif %}
            {% if is_incremental() %}
            and raw_events.received_at >= {{ cutoff }}
            {% endif %}
    ) as numbered
    where copy_number = 1
    {% if is_incremental() %}
        and not exists (
            select 1
            from {{ this }} as stored
            where stored.message_id = numbered.message_id
                and stored.received_at < {{ cutoff }}
        )
    {% endif %}
{%- endmacro %}


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
    -#}
    {%- set path = env_var('SIGNALMAIL_LEDGER_PATH', '../data/ledger.duckdb') -%}
    {%- set alias = ledger_database() -%}
    {%- if execute -%}
        {%- set found = run_query("select count(*) from glob('" ~ path | replace("'", "''") ~ "')") -%}
        {%- if found.columns[0].values()[0] > 0 -%}
            attach if not exists '{{ path | replace("'", "''") }}' as {{ alias }} (read_only)
        {%- else -%}
            select 1
        {%- endif -%}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{% macro ledger_database() -%}
    {#- Catalog holding the send ledger: the attached file on DuckDB, the warehouse elsewhere. -#}
    {{ return(adapter.dispatch('ledger_database', 'signalmail')()) }}
{%- endmacro %}

{% macro default__ledger_database() -%}
    {{ return(var('ledger_database', target.database)) }}
{%- endmacro %}

{% macro duckdb__ledger_database() -%}
    {{ return(var('ledger_database', 'signalmail_ledger_db')) }}
{%- endmacro %}


{% macro restitched_anonymous_ids(cutoff) -%}
    {#-
        Anonymous ids whose identity link changed at or after `cutoff`: their stored events must
        be resolved again (a late identify or alias re-attributes earlier anonymous activity).
    -#}
    select anonymous_id from {{ ref('int_identity_map') }}
    where last_received_at >= {{ cutoff }}
{%- endmacro %}


{% macro cte_hint(hint) -%}
    {#-
        `materialized` or `not materialized` before a CTE's body, where the engine takes it.
        `materialized`: compute once a CTE that is read several times (the touched users).
        `not materialized`: keep a CTE read twice inlined into each reader, so each reader's
        filter reaches the tables and their indexes (Postgres 12+ would compute it in full).
    -#}
    {{ return(adapter.dispatch('cte_hint', 'signalmail')(hint)) }}
{%- endmacro %}

{% macro default__cte_hint(hint) -%}
{%- endmacro %}

{% macro duckdb__cte_hint(hint) -%}
    {{ hint }}
{%- endmacro %}

{% macro postgres__cte_hint(hint) -%}
    {{ hint }}
{%- endmacro %}

{% macro snowflake__cte_hint(hint) -%}
    {#- Snowflake decides materialisation itself -#}
{%- endmacro %}

{% macro bigquery__cte_hint(hint) -%}
    {#- BigQuery has no CTE materialisation hint -#}
{%- endmacro %}


{% macro postgres_indexes(column_sets) -%}
    {#-
        The `indexes` config of an incremental model, on Postgres only. A tick finds its rows by
        key (delete+insert, the anti-join against stored copies, a touched user's history) and
        by the high-water mark; without indexes Postgres scans all of history for each. DuckDB
        needs none (zone maps on received_at; its ART indexes would slow every delete+insert).
    -#}
    {%- set indexes = [] -%}
    {%- if target.type == 'postgres' -%}
        {%- for columns in column_sets -%}
            {%- do indexes.append({'columns': columns}) -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(indexes) }}
{%- endmacro %}

{% macro now_utc() -%}
    {#-
        The one "now" of the project, as a naive UTC timestamp like every timestamp we store.
        `--vars '{as_of: "2026-01-01 12:00:00"}'` freezes it for tests and replays.
    -#}
    {%- if var('as_of', none) -%}
        cast('{{ var("as_of") }}' as {{ dbt.type_timestamp() }})
    {%- else -%}
        {{ return(adapter.dispatch('now_utc', 'signalmail')()) }}
    {%- endif -%}
{%- endmacro %}

{% macro default__now_utc() -%}
    cast({{ dbt.current_timestamp() }} as {{ dbt.type_timestamp() }})
{%- endmacro %}

{% macro duckdb__now_utc() -%}
    {#- current_timestamp is timestamptz; shift to UTC before dropping the zone -#}
    cast(timezone('UTC', current_timestamp) as timestamp)
{%- endmacro %}

{% macro postgres__now_utc() -%}
    (now() at time zone 'UTC')
{%- endmacro %}

{% macro snowflake__now_utc() -%}
    convert_timezone('UTC', current_timestamp())::timestamp_ntz
{%- endmacro %}

{% macro bigquery__now_utc() -%}
    current_datetime('UTC')
{%- endmacro %}

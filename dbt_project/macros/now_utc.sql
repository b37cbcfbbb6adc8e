{% macro now_utc() -%}
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


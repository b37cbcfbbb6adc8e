{% macro analyze_relation() -%}
    {#-
        Post-hook: refresh planner statistics of a freshly built table. Postgres plans fresh,
        never-analysed tables as if they held one row and picks nested loops that turn seconds
        into minutes; DuckDB keeps statistics as it writes and needs nothing.
    -#}
    {{ return(adapter.dispatch('analyze_relation', 'signalmail')()) }}
{%- endmacro %}

{% macro default__analyze_relation() -%}
{%- endmacro %}

{% macro postgres__analyze_relation() -%}
    {%- if config.get('materialized') in ('table', 'incremental') -%}
        analyze {{ this }}
    {%- endif -%}
{%- endmacro %}

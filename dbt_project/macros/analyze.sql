{% macro analyze_relation() -%}
    {{ return(adapter.dispatch('analyze_relation', 'signalmail')()) }}
{%- endmacro %}

{% macro default__analyze_relation() -%}
{%- endmacro %}

{% macro postgres__analyze_relation() -%}
    {%- if config.get('materialized') in ('table', 'incremental') -%}
        analyze {{ this }}
    {%- endif -%}
{%- endmacro %}


{% macro planner_settings() -%}
    {{ return(adapter.dispatch('planner_settings', 'signalmail')()) }}
{%- endmacro %}

{% macro default__planner_settings() -%}
{%- endmacro %}

{% macro postgres__planner_settings() -%}
    set jit = off
{%- endmacro %}

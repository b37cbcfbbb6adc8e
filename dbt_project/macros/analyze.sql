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


{% macro planner_settings() -%}
    {#-
        Pre-hook: session settings for the planner before a model's query. Postgres JIT-compiles
        every query whose estimated cost passes `jit_above_cost`; the estimates of the rule
        models' CTEs are huge while their real work is small, and compiling took 3.1 of the
        3.7 s of int_trigger_candidates on every tick (EXPLAIN ANALYZE, 250,000 events).
        A DBA may prefer `alter role ... set jit = off`; this keeps it to dbt's sessions.
    -#}
    {{ return(adapter.dispatch('planner_settings', 'signalmail')()) }}
{%- endmacro %}

{% macro default__planner_settings() -%}
{%- endmacro %}

{% macro postgres__planner_settings() -%}
    set jit = off
{%- endmacro %}

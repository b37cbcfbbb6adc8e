{% macro analyze_relation() -%}
    {{ return(adapter.dispatch('analyze_relation', 'signalmail')()) }}
{%- endmacro %}

{% macro default__analyze_relation() -%}
{%- endmacro %}

{#- A table a build has just created has no statistics, and the next query plans against it,
    so it is analysed at once; autovacuum would come a minute later. A tick's few new rows
    barely move the statistics of an incremental table (and the planner reads the true min and
    max of its indexed columns, so new times past the histogram are still estimated), so an
    incremental table is analysed again only when rows changed since its last analyse pass a
    tenth of it: autovacuum's own rule (autovacuum_analyze_scale_factor 0.1, threshold 50). -#}
{% macro postgres__analyze_relation() -%}
    {%- if config.get('materialized') == 'table' -%}
        analyze {{ this }}
    {%- elif config.get('materialized') == 'incremental' -%}
        do $analyze$ begin
            if exists (
                select 1
                from pg_stat_user_tables
                where relid = '{{ this }}'::regclass
                    and (
                        coalesce(last_analyze, last_autoanalyze) is null
                        or n_mod_since_analyze > 50 + 0.1 * n_live_tup
                    )
            ) then
                analyze {{ this }};
            end if;
        end $analyze$
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

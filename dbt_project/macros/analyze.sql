{% macro analyze_relation() -%}
    {{ return(adapter.dispatch('analyze_relation', 'signalmail')()) }}
{%- endmacro %}

{% macro default__analyze_relation() -%}
{%- endmacro %}

{#- A table a build has just created has no statistics and the next query plans against it,
    so it is analysed at once (autovacuum would come a minute later). An incremental table is
    analysed when it never was (its first build, a full refresh) or when the rows changed since
    its last analyse, this run's own included (pg_stat_xact_user_tables: the post-hook runs in
    the model's transaction), pass autovacuum's own threshold. A tick's few rows barely move the
    statistics of a big table, and the planner reads the true min and max of an indexed column
    past the histogram's end. -#}
{% macro postgres__analyze_relation() -%}
    {#- a statistics target of 0: analyze leaves the column out (analyze.yml says why) -#}
    {%- for column in config.get('analyze_skip_columns') or [] %}
        alter table {{ this }} alter column {{ adapter.quote(column) }} set statistics 0;
    {%- endfor %}
    {%- if config.get('materialized') == 'table' -%}
        analyze {{ this }}
    {%- elif config.get('materialized') == 'incremental' -%}
        do $analyze$ begin
            if exists (
                select 1
                from pg_stat_user_tables as stats
                left join pg_stat_xact_user_tables as this_run on stats.relid = this_run.relid
                where stats.relid = '{{ this }}'::regclass
                    and (
                        coalesce(stats.last_analyze, stats.last_autoanalyze) is null
                        or stats.n_mod_since_analyze
                        + coalesce(this_run.n_tup_ins + this_run.n_tup_upd + this_run.n_tup_del, 0)
                        > current_setting('autovacuum_analyze_threshold')::float8
                        + current_setting('autovacuum_analyze_scale_factor')::float8
                        * stats.n_live_tup
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


{% macro postgres_planner(settings) -%}
    {{ return(adapter.dispatch('postgres_planner', 'signalmail')(settings)) }}
{%- endmacro %}

{% macro default__postgres_planner(settings) -%}
{%- endmacro %}

{% macro postgres__postgres_planner(settings) -%}
    {#- set_config(..., true) is `set local`: the model's transaction only, not the next model
        on this connection; the value goes as a quoted literal, so '64MB' works as well -#}
    select
    {%- for name, value in settings.items() %}
        set_config({{ dbt.string_literal(name) }}, {{ dbt.string_literal(value) }}, true)
        {%- if not loop.last %},{% endif %}
    {%- endfor %}
{%- endmacro %}

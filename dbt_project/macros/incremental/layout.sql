{#-
    Where rows sit and how the planner reads them: build order, CTE hints, Postgres indexes.
    Docs: layout.yml.
-#}

{% macro full_build_order(column) -%}
    {%- if not is_incremental() -%}
    order by {{ column }}
    {%- endif -%}
{%- endmacro %}


{% macro cte_hint(hint) -%}
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


{% macro postgres_indexes(column_sets) -%}
    {%- set indexes = [] -%}
    {%- if target.type == 'postgres' -%}
        {%- for columns in column_sets -%}
            {%- do indexes.append({'columns': columns}) -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(indexes) }}
{%- endmacro %}

{#-
    Custom incremental strategies (docs/signals.md, "How incremental works"): delete+insert
    bounded so that DuckDB reads only the newest row groups. Docs: strategies.yml.
-#}

{% macro get_incremental_bounded_delete_insert_sql(arg_dict) -%}
    {%- set column = config.require('delete_bound') -%}
    {%- set key = arg_dict['unique_key'] -%}
    {%- if key is not string -%}
        {{ exceptions.raise_compiler_error(
            "bounded_delete_insert needs a single-column unique_key, got " ~ key ~ " in " ~ this
        ) }}
    {%- endif -%}
    {%- set predicates = [] + (arg_dict['incremental_predicates'] or []) -%}
    {%- set query -%}
        select min({{ column }}), count(*) - count({{ column }}) from {{ arg_dict['temp_relation'] }}
    {%- endset -%}
    {%- set row = run_query(query).rows[0] -%}
    {%- if row[0] is none or row[1] > 0 -%}
        {{ return(get_incremental_delete_insert_sql(arg_dict)) }}
    {%- endif -%}
    {%- do predicates.append(column ~ ' >= ' ~ timestamp_literal(row[0])) -%}
    {%- do arg_dict.update({'incremental_predicates': predicates}) -%}
    delete from {{ arg_dict['target_relation'] }}
    where {{ key }} in (select {{ key }} from {{ arg_dict['temp_relation'] }})
        and {{ column }} is null;
    {{ get_incremental_delete_insert_sql(arg_dict) }}
{%- endmacro %}


{% macro get_incremental_tail_replace_sql(arg_dict) -%}
    {%- set column = config.require('tail_column') -%}
    {%- set key = arg_dict['unique_key'] -%}
    {%- if key is not string -%}
        {{ exceptions.raise_compiler_error(
            "tail_replace needs a single-column unique_key, got " ~ key ~ " in " ~ this
        ) }}
    {%- endif -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set source = arg_dict['temp_relation'] -%}
    {%- set dest_cols_csv = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    {#- the smallest replaced_from of all keys, as a literal: lets the delete skip row groups -#}
    {%- set replaced_from = earliest('select ' ~ column ~ ' from ' ~ source, column) -%}
    delete from {{ target }} as stored
    where {% if replaced_from is not none -%}
        stored.{{ column }} >= {{ replaced_from }}
        and {% endif -%}
    {{ tail_replaced(key, column, source) }};

    insert into {{ target }} ({{ dest_cols_csv }})
    (
        select {{ dest_cols_csv }}
        from {{ source }}
    )
{%- endmacro %}


{% macro tail_replaced(key, column, source) -%}
    {{ return(adapter.dispatch('tail_replaced', 'signalmail')(key, column, source)) }}
{%- endmacro %}

{% macro default__tail_replaced(key, column, source) -%}
    exists (
        select 1
        from (
            select {{ key }}, min({{ column }}) as replaced_from
            from {{ source }}
            group by {{ key }}
        ) as replaced
        where replaced.{{ key }} = stored.{{ key }}
            and stored.{{ column }} >= replaced.replaced_from
    )
{%- endmacro %}


{% macro spark__tail_replaced(key, column, source) -%}
    {#-
        The same rows without the aggregate: a stored row lies at or after its key's smallest
        new value exactly when it lies at or after some new value of its key. Spark 3.5's
        row-level delete fails on the aggregated form with "IllegalStateException: Couldn't
        find replaced_from#... in [...]" (a correlated subquery under an aggregate).
    -#}
    exists (
        select 1
        from {{ source }} as replaced
        where replaced.{{ key }} = stored.{{ key }}
            and stored.{{ column }} >= replaced.{{ column }}
    )
{%- endmacro %}

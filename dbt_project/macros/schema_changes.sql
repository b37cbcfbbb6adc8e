{#-
    dbt's `on_schema_change` check, with each relation's columns read through the
    `get_columns_in_relation` macro instead of the adapter method of the same name. Both run
    the same query; the adapter method first builds a fresh macro context holding every macro
    of the project and of dbt. Two of those per incremental model were 13% of a near-real-time
    tick's worker-thread samples under py-spy, and every tick runs the check, since every
    incremental model here sets `on_schema_change`.

    Only for adapters whose `get_columns_in_relation` is a macro: BigQuery's lives in Python,
    so other adapters keep dbt's own check.
-#}

{% macro duckdb__check_for_schema_changes(source_relation, target_relation) -%}
    {{ return(schema_changes_between(source_relation, target_relation)) }}
{%- endmacro %}


{% macro postgres__check_for_schema_changes(source_relation, target_relation) -%}
    {{ return(schema_changes_between(source_relation, target_relation)) }}
{%- endmacro %}


{% macro schema_changes_between(source_relation, target_relation) -%}
    {#- The dictionary dbt's default__check_for_schema_changes returns, built the same way. -#}
    {%- set source_columns = get_columns_in_relation(source_relation) -%}
    {%- set target_columns = get_columns_in_relation(target_relation) -%}
    {%- set source_not_in_target = diff_columns(source_columns, target_columns) -%}
    {%- set target_not_in_source = diff_columns(target_columns, source_columns) -%}
    {%- set new_target_types = diff_column_data_types(source_columns, target_columns) -%}
    {%- set schema_changed = (
        source_not_in_target != []
        or target_not_in_source != []
        or new_target_types != []
    ) -%}
    {%- do log(
        'In ' ~ target_relation ~ ': schema changed: ' ~ schema_changed
        ~ '; source columns not in target: ' ~ source_not_in_target
        ~ '; target columns not in source: ' ~ target_not_in_source
        ~ '; new column types: ' ~ new_target_types
    ) -%}
    {{ return({
        'schema_changed': schema_changed,
        'source_not_in_target': source_not_in_target,
        'target_not_in_source': target_not_in_source,
        'source_columns': source_columns,
        'target_columns': target_columns,
        'new_target_types': new_target_types,
    }) }}
{%- endmacro %}

{#-
    The project's incremental strategies on Apache Spark (dbt-spark), for Iceberg or Delta
    tables, which support row-level DELETE. Docs: spark.yml and docs/spark.md.
-#}

{% macro row_level_strategies() -%}
    {{ return({
        'delete+insert': get_incremental_delete_insert_sql,
        'bounded_delete_insert': get_incremental_bounded_delete_insert_sql,
        'tail_replace': get_incremental_tail_replace_sql,
    }) }}
{%- endmacro %}


{% macro dbt_spark_validate_get_incremental_strategy(raw_strategy, file_format) -%}
    {%- if raw_strategy in row_level_strategies() -%}
        {%- if file_format not in ['iceberg', 'delta'] -%}
            {{ exceptions.raise_compiler_error(
                "incremental_strategy '" ~ raw_strategy ~ "' deletes rows: on Spark it needs "
                ~ "file_format 'iceberg' or 'delta', got '" ~ file_format ~ "' in " ~ this
            ) }}
        {%- endif -%}
        {{ return(raw_strategy) }}
    {%- endif -%}
    {{ return(dbt.dbt_spark_validate_get_incremental_strategy(raw_strategy, file_format)) }}
{%- endmacro %}


{% macro dbt_spark_get_incremental_sql(
    strategy, source, target, existing, unique_key, incremental_predicates
) -%}
    {%- if strategy not in row_level_strategies() -%}
        {{ return(dbt.dbt_spark_get_incremental_sql(
            strategy, source, target, existing, unique_key, incremental_predicates
        )) }}
    {%- endif -%}
    {#-
        dbt-spark's `source` is a temporary view of the model's query, which reads the target
        itself ({{ this }}): read after the delete, it would answer differently. So the new
        rows are written to a stage table first. dbt-spark runs one statement per call: the
        strategy's statements (separated by `;`) run one by one here, and the stage is
        dropped; `main` only refreshes the target's cached metadata.
    -#}
    {%- set stage = target.incorporate(path={'identifier': target.identifier ~ '__dbt_stage'}) -%}
    {#- in the model's format, an Iceberg stage dropped with purge: a dropped parquet table
        left its folder behind, and the next tick's stage failed with LOCATION_ALREADY_EXISTS -#}
    {%- set file_format = config.get('file_format') -%}
    {%- set drop_stage = 'drop table if exists ' ~ stage ~ (' purge' if file_format == 'iceberg' else '') -%}
    {%- do run_query(drop_stage) -%}
    {%- do run_query('create table ' ~ stage ~ ' using ' ~ file_format ~ ' as select * from ' ~ source) -%}
    {%- set sql = row_level_strategies()[strategy]({
        'target_relation': target,
        'temp_relation': stage,
        'unique_key': unique_key,
        'dest_columns': adapter.get_columns_in_relation(target),
        'incremental_predicates': incremental_predicates,
    }) -%}
    {%- for statement in sql.split(';') if statement.strip() -%}
        {%- do run_query(statement) -%}
    {%- endfor -%}
    {%- do run_query(drop_stage) -%}
    refresh table {{ target }}
{%- endmacro %}

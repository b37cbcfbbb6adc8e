{% macro unsupported_adapter(macro_name) -%}
    {{ return(
        "signalmail's dbt project runs on DuckDB, PostgreSQL and Spark: " ~ macro_name
        ~ " has no variant for " ~ target.type ~ ". Add a macro " ~ target.type ~ "__"
        ~ macro_name ~ " (docs/signals.md, \"Other warehouses\")."
    ) }}
{%- endmacro %}


{% macro column_type(data_type) -%}
    {{ return(adapter.dispatch('column_type', 'signalmail')(data_type)) }}
{%- endmacro %}

{% macro default__column_type(data_type) -%}
    {{ return(data_type) }}
{%- endmacro %}

{% macro spark__column_type(data_type) -%}
    {#- Spark knows `varchar` only with a length (reading `varchar(n)` as string), and
        `double precision` not at all -#}
    {%- set spark_types = {'varchar': 'string', 'text': 'string', 'double precision': 'double'} -%}
    {{ return(spark_types.get(data_type | lower | trim, data_type)) }}
{%- endmacro %}


{% macro spark__get_empty_schema_sql(columns) -%}
    {#-
        dbt's contract check casts null to each YAML `data_type`: the same, through
        column_type(), so that the YAML's portable `varchar` reads as Spark's `string`.
    -#}
    {%- set translated = {} -%}
    {%- for name, column in columns.items() -%}
        {%- do translated.update({name: dict(column, data_type=column_type(column['data_type']))}) -%}
    {%- endfor -%}
    {{ return(dbt.default__get_empty_schema_sql(translated)) }}
{%- endmacro %}


{% macro spark__alter_column_comment(relation, column_dict) -%}
    {#-
        dbt-spark's own, with each comment cut to 256 characters: the Hive metastore stores a
        column comment in a VARCHAR(256), and a longer one fails the whole build (Derby:
        "A truncation error was encountered trying to shrink VARCHAR ... to length 256").
        The full text stays in `dbt docs`.
    -#}
    {%- set shortened = {} -%}
    {%- for name, column in column_dict.items() -%}
        {%- set text = (column['description'] or '') | replace('\n', ' ') | trim -%}
        {%- set text = text if text | length <= 256 else text[:253] ~ '...' -%}
        {%- do shortened.update({name: dict(column, description=text)}) -%}
    {%- endfor -%}
    {{ return(dbt.spark__alter_column_comment(relation, shortened)) }}
{%- endmacro %}

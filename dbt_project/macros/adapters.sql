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
    {%- if target.type == 'databricks' -%}
        {#- dbt finds the root project's spark__ macro before dbt-databricks' own -#}
        {{ return(dbt.databricks__alter_column_comment(relation, column_dict)) }}
    {%- endif -%}
    {%- set shortened = {} -%}
    {%- for name, column in column_dict.items() -%}
        {%- set text = (column['description'] or '') | replace('\n', ' ') | trim -%}
        {%- set text = text if text | length <= 256 else text[:253] ~ '...' -%}
        {%- do shortened.update({name: dict(column, description=text)}) -%}
    {%- endfor -%}
    {{ return(dbt.spark__alter_column_comment(relation, shortened)) }}
{%- endmacro %}


{% macro spark__create_table_as(temporary, relation, compiled_code, language='sql') -%}
    {#-
        dbt-spark's own, but for a contracted model stored as Iceberg: its not_null
        constraints become the table's required columns, so that Spark fails the build on a
        null instead of storing it. dbt-spark sets them on Delta tables only, after the build
        (`alter table ... change column ... set not null`), which Iceberg refuses: "Cannot
        change nullable column to non-nullable". Docs: adapters.yml and docs/spark.md.
    -#}
    {%- if target.type == 'databricks' -%}
        {#- dbt finds the root project's spark__ macro before dbt-databricks' own -#}
        {{ return(dbt.databricks__create_table_as(temporary, relation, compiled_code, language)) }}
    {%- endif -%}
    {%- set contract_config = config.get('contract') -%}
    {%- if temporary or language != 'sql' or not contract_config.enforced
        or config.get('file_format') != 'iceberg' -%}
        {{ return(dbt.spark__create_table_as(temporary, relation, compiled_code, language)) }}
    {%- endif -%}
    {{ get_assert_columns_equivalent(compiled_code) }}
    {%- set columns = iceberg_contract_columns(model.columns) -%}
    {%- set clauses = iceberg_table_clauses() -%}
    {%- set properties = dict(config.get('tblproperties') or {}) -%}
    {%- set fingerprint = local_md5(columns ~ clauses ~ properties | dictsort | string) -%}
    {%- do properties.update({'signalmail.contract': fingerprint}) -%}
    {%- set query = get_select_subquery(compiled_code) -%}
    {#- static: every row of the table is replaced, also by an empty result (dynamic mode,
        which dbt-spark's insert_overwrite strategy sets for the session, keeps the old rows
        then) -#}
    {%- do run_query('set spark.sql.sources.partitionOverwriteMode = STATIC') -%}
    {%- if not should_full_refresh()
        and iceberg_contract_holds(relation, model.columns, fingerprint) -%}
        {#- one commit: a null fails it and the table keeps the last good rows -#}
        insert overwrite table {{ relation }}
        {{ query }}
    {%- else -%}
        {#- a new definition: the rows are checked in a stage before the table is replaced,
            so a null fails the build with the old table and its rows in place -#}
        {%- set stage = relation.incorporate(
            path={'identifier': relation.identifier ~ '__dbt_contract'}
        ) -%}
        {%- set drop_stage = 'drop table if exists ' ~ stage ~ ' purge' -%}
        {%- do run_query(drop_stage) -%}
        {%- do run_query('create table ' ~ stage ~ ' ' ~ columns ~ ' using iceberg') -%}
        {%- do run_query('insert into ' ~ stage ~ ' ' ~ query) -%}
        {%- set listed = [] -%}
        {%- for key, value in properties.items() -%}
            {%- do listed.append(dbt.string_literal(key) ~ ' = ' ~ dbt.string_literal(value)) -%}
        {%- endfor -%}
        {%- do run_query(
            'create or replace table ' ~ relation ~ ' ' ~ columns ~ ' ' ~ clauses
            ~ ' tblproperties (' ~ listed | join(', ') ~ ')'
        ) -%}
        {%- do run_query('insert into ' ~ relation ~ ' select * from ' ~ stage) -%}
        {{ drop_stage }}
    {%- endif -%}
{%- endmacro %}


{% macro iceberg_contract_columns(columns) -%}
    {#- A contracted table's columns for `create table`: a not_null constraint makes one
        required -#}
    {%- set specs = [] -%}
    {%- for name, column in columns.items() -%}
        {%- set quoted = adapter.quote(name) if column.get('quote') else name -%}
        {%- do specs.append(
            quoted ~ ' ' ~ column_type(column['data_type'])
            ~ (' not null' if iceberg_column_required(column) else '')
        ) -%}
    {%- endfor -%}
    ({{ specs | join(', ') }})
{%- endmacro %}


{% macro iceberg_column_required(column) -%}
    {{ return(
        column.get('constraints', []) | selectattr('type', 'equalto', 'not_null') | list
        | length > 0
    ) }}
{%- endmacro %}


{% macro iceberg_table_clauses() -%}
    {#- the model's table clauses but its properties, as dbt-spark writes them -#}
    {{ file_format_clause() }}
    {{ options_clause() }}
    {{ partition_cols(label="partitioned by") }}
    {{ clustered_cols(label="clustered by") }}
    {{ location_clause() }}
    {{ comment_clause() }}
{%- endmacro %}


{% macro iceberg_contract_holds(relation, columns, fingerprint) -%}
    {#- Whether the stored table is the contracted Iceberg table as now defined: created from
        this definition (its property) and with each column required exactly as the contract
        says (a table replaced another way keeps the old property, not the required columns).
        Read from `show create table`: the listing's copy of Iceberg's schema is redacted
        when a column's comment mentions a URL -#}
    {%- if not execute -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set existing = adapter.get_relation(
        database=relation.database, schema=relation.schema, identifier=relation.identifier
    ) -%}
    {%- if existing is none or not existing.is_iceberg -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set ddl = run_query('show create table ' ~ relation).rows[0][0] -%}
    {%- if ("'signalmail.contract' = '" ~ fingerprint ~ "'") not in ddl -%}
        {{ return(false) }}
    {%- endif -%}
    {%- for name, column in columns.items() -%}
        {#- a column's line: `  name TYPE[ NOT NULL][ COMMENT '...']` -#}
        {%- set line = modules.re.search(
            '(?m)^\\s*`?' ~ modules.re.escape(name) ~ '`?\\s+\\S+( NOT NULL)?', ddl
        ) -%}
        {%- if line is none
            or (line.group(1) is not none) != iceberg_column_required(column) -%}
            {{ return(false) }}
        {%- endif -%}
    {%- endfor -%}
    {{ return(true) }}
{%- endmacro %}


{% macro spark__list_relations_without_caching(relation) -%}
    {#-
        dbt-spark's own listing (`show table extended`), with each Iceberg table of Hive's
        session catalog named as one. Spark reports such a table's provider as `hive` (the
        metastore entry Iceberg's HiveCatalog writes says `table_type=ICEBERG` instead), so
        dbt-spark took it for a Hive table: its table materialization dropped the table before
        building it again, where an Iceberg table is replaced in one commit.
    -#}
    {%- if target.type == 'databricks' -%}
        {#- dbt finds the root project's spark__ macro before dbt-databricks' own -#}
        {{ return(dbt.databricks__list_relations_without_caching(relation)) }}
    {%- endif -%}
    {%- set rows = [] -%}
    {%- for row in dbt.spark__list_relations_without_caching(relation) -%}
        {%- set information = row[3] -%}
        {%- if 'Provider: hive' in information and 'table_type=ICEBERG' in information -%}
            {%- set information = information.replace('Provider: hive', 'Provider: iceberg') -%}
        {%- endif -%}
        {%- do rows.append([row[0], row[1], row[2], information]) -%}
    {%- endfor -%}
    {{ return(rows) }}
{%- endmacro %}

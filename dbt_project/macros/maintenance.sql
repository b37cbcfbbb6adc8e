{% macro expire_snapshots(older_than_hours=24, retain_last=10) -%}
    {#- a typo must not become "expire everything": numbers only (a filter like `| float` would
        read 'abc' as 0 hours) -#}
    {%- if older_than_hours is not number or retain_last is not number
        or older_than_hours < 0 or retain_last < 1 or retain_last != retain_last | int -%}
        {{ exceptions.raise_compiler_error(
            'expire_snapshots: older_than_hours must be a number of hours, 0 or more, and '
            ~ 'retain_last a whole number of snapshots, 1 or more; got '
            ~ older_than_hours ~ ' and ' ~ retain_last) }}
    {%- endif -%}
    {{ return(adapter.dispatch('expire_snapshots', 'signalmail')(
        older_than_hours, retain_last | int
    )) }}
{%- endmacro %}


{% macro default__expire_snapshots(older_than_hours, retain_last) -%}
    {{ log('expire_snapshots: nothing to do on ' ~ target.type ~ ' (Iceberg tables keep snapshots; '
        ~ 'this warehouse keeps no history of its own)', info=true) }}
{%- endmacro %}


{% macro spark__expire_snapshots(older_than_hours, retain_last) -%}
    {#- Iceberg's procedure takes its arguments as literals: the cutoff is computed here, in UTC
        as the profile's session time zone. Tables of another format (Delta on Databricks,
        whose VACUUM Databricks schedules itself) are left alone. Each schema is listed once
        (a run-operation has no relation cache: adapter.get_relation per model listed the
        schema again for every model). -#}
    {%- set cutoff = (
        modules.datetime.datetime.utcnow() - modules.datetime.timedelta(hours=older_than_hours)
    ).strftime('%Y-%m-%d %H:%M:%S') -%}
    {%- set aliases_by_schema = {} -%}
    {%- set database_of = {} -%}
    {%- for node in graph.nodes.values()
        if node.resource_type == 'model' and node.config.materialized in ('table', 'incremental') -%}
        {%- do aliases_by_schema.setdefault(node.schema, []).append(node.alias | lower) -%}
        {%- do database_of.update({node.schema: node.database}) -%}
    {%- endfor -%}
    {%- for schema, aliases in aliases_by_schema.items()
        if adapter.check_schema_exists(database_of[schema], schema) -%}
        {%- set iceberg_tables = [] -%}
        {%- for row in list_relations_without_caching(api.Relation.create(schema=schema)) -%}
            {%- if 'Provider: iceberg' in row[3] -%}
                {%- do iceberg_tables.append(row[1] | lower) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- for alias in aliases | sort if alias in iceberg_tables -%}
            {%- set expired = run_query(
                "call spark_catalog.system.expire_snapshots(table => '"
                ~ schema ~ "." ~ alias
                ~ "', older_than => timestamp '" ~ cutoff ~ "', retain_last => " ~ retain_last ~ ")"
            ) -%}
            {%- set counts = [] -%}
            {%- for column in expired.column_names -%}
                {%- do counts.append(column ~ '=' ~ expired.rows[0][loop.index0]) -%}
            {%- endfor -%}
            {{ log('expire_snapshots: ' ~ schema ~ '.' ~ alias ~ ' before ' ~ cutoff ~ ' UTC, keeping '
                ~ retain_last ~ ': ' ~ counts | join(', '), info=true) }}
        {%- endfor -%}
    {%- endfor -%}
{%- endmacro %}

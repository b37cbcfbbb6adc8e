{% macro nightly_ref(model_name) -%}
    {#-
        ref() to a model the nightly build refreshes and the near-real-time tick only reads.
        On a fresh warehouse, before the first nightly build, the table does not exist yet:
        it then reads as an empty relation with the model's documented columns (`data_type`
        in its YAML), so the first tick works and the rules that need it find nothing.
    -#}
    {%- set relation = ref(model_name) -%}
    {#- a unit test's fixture stands in for the table: no schema, nothing to look up -#}
    {%- if execute and relation.schema is not none and adapter.get_relation(
            database=relation.database, schema=relation.schema, identifier=relation.identifier
        ) is none -%}
        {%- set node = graph.nodes.values() | selectattr('name', 'equalto', model_name) | first -%}
        {%- set columns = node.columns.values() | list -%}
        {%- if not columns or columns | selectattr('data_type', 'none') | list -%}
            {{ exceptions.raise_compiler_error(
                "nightly_ref('" ~ model_name ~ "'): give every column of the model a data_type in "
                ~ "its YAML, so a tick before the first nightly build can read it as empty"
            ) }}
        {%- endif -%}
        (
            select
            {%- for column in columns %}
                cast(null as {{ column_type(column.data_type) }}) as {{ column.name }}{{ ',' if not loop.last }}
            {%- endfor %}
            where 1 = 0
        ) as {{ model_name }}_not_built_yet
    {%- else -%}
        {{ relation }}
    {%- endif -%}
{%- endmacro %}

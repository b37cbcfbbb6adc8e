{#-
    JSON access for the loaders' column types: DuckDB `json`, Postgres `jsonb`,
    Snowflake `variant`, BigQuery `json`. `path` is a list of object keys.
-#}

{% macro json_text(column, path) -%}
    {{ return(adapter.dispatch('json_text', 'signalmail')(column, path)) }}
{%- endmacro %}

{% macro default__json_text(column, path) -%}
    json_extract_scalar({{ column }}, '$.{{ path | join(".") }}')
{%- endmacro %}

{% macro duckdb__json_text(column, path) -%}
    ({{ column }} ->> '$.{{ path | join(".") }}')
{%- endmacro %}

{% macro postgres__json_text(column, path) -%}
    ({{ column }} #>> '{ {{- path | join(",") -}} }')
{%- endmacro %}

{% macro snowflake__json_text(column, path) -%}
    ({{ column }}:{{ path | join(":") }})::varchar
{%- endmacro %}

{% macro bigquery__json_text(column, path) -%}
    json_value({{ column }}, '$.{{ path | join(".") }}')
{%- endmacro %}


{% macro json_get(column, path) -%}
    {{ return(adapter.dispatch('json_get', 'signalmail')(column, path)) }}
{%- endmacro %}

{% macro default__json_get(column, path) -%}
    json_extract({{ column }}, '$.{{ path | join(".") }}')
{%- endmacro %}

{% macro postgres__json_get(column, path) -%}
    ({{ column }} #> '{ {{- path | join(",") -}} }')
{%- endmacro %}

{% macro snowflake__json_get(column, path) -%}
    {{ column }}:{{ path | join(":") }}
{%- endmacro %}

{% macro bigquery__json_get(column, path) -%}
    json_query({{ column }}, '$.{{ path | join(".") }}')
{%- endmacro %}


{% macro json_array_rows(json_array) -%}
    {#-
        A lateral join that yields one row per element of `json_array` as `element` (JSON) and
        `element_index` (0-based). Anything that is not an array yields no rows, never an error:
        raw events are client input.
    -#}
    {{ return(adapter.dispatch('json_array_rows', 'signalmail')(json_array)) }}
{%- endmacro %}

{% macro default__json_array_rows(json_array) -%}
    {{ exceptions.raise_compiler_error("json_array_rows is not implemented for " ~ target.type) }}
{%- endmacro %}

{% macro duckdb__json_array_rows(json_array) -%}
    cross join lateral (
        select
            element_index,
            json_extract({{ json_array }}, '$[' || element_index || ']') as element
        from (
            select unnest(range(
                case when json_type({{ json_array }}) = 'ARRAY'
                    then json_array_length({{ json_array }})::bigint else 0 end
            )) as element_index
        ) as indexes
    ) as json_elements
{%- endmacro %}

{% macro postgres__json_array_rows(json_array) -%}
    cross join lateral (
        select
            element_index - 1 as element_index,
            element
        from jsonb_array_elements(
            case when jsonb_typeof({{ json_array }}) = 'array'
                then {{ json_array }} else '[]'::jsonb end
        ) with ordinality as elements (element, element_index)
    ) as json_elements
{%- endmacro %}

{% macro snowflake__json_array_rows(json_array) -%}
    , lateral (
        select index as element_index, value as element
        from table(flatten(input => {{ json_array }}, outer => false))
        where is_array({{ json_array }})
    ) as json_elements
{%- endmacro %}

{% macro bigquery__json_array_rows(json_array) -%}
    cross join unnest(ifnull(json_query_array({{ json_array }}), [])) as element
        with offset as element_index
{%- endmacro %}


{#- Building JSON for payloads: objects, ordered array aggregation, text output. -#}

{% macro json_object(pairs) -%}
    {#- pairs: list of (key, sql expression) -#}
    {{ return(adapter.dispatch('json_object', 'signalmail')(pairs)) }}
{%- endmacro %}

{% macro default__json_object(pairs) -%}
    json_object({% for key, value in pairs %}'{{ key }}', {{ value }}{{ ", " if not loop.last }}{% endfor %})
{%- endmacro %}

{% macro postgres__json_object(pairs) -%}
    jsonb_build_object({% for key, value in pairs %}'{{ key }}', {{ value }}{{ ", " if not loop.last }}{% endfor %})
{%- endmacro %}

{% macro snowflake__json_object(pairs) -%}
    object_construct_keep_null({% for key, value in pairs %}'{{ key }}', {{ value }}{{ ", " if not loop.last }}{% endfor %})
{%- endmacro %}

{% macro bigquery__json_object(pairs) -%}
    json_object({% for key, value in pairs %}'{{ key }}', {{ value }}{{ ", " if not loop.last }}{% endfor %})
{%- endmacro %}


{% macro json_array_agg(expression, order_by) -%}
    {{ return(adapter.dispatch('json_array_agg', 'signalmail')(expression, order_by)) }}
{%- endmacro %}

{% macro default__json_array_agg(expression, order_by) -%}
    json_group_array({{ expression }})
{%- endmacro %}

{% macro duckdb__json_array_agg(expression, order_by) -%}
    to_json(list({{ expression }} order by {{ order_by }}))
{%- endmacro %}

{% macro postgres__json_array_agg(expression, order_by) -%}
    jsonb_agg({{ expression }} order by {{ order_by }})
{%- endmacro %}

{% macro snowflake__json_array_agg(expression, order_by) -%}
    array_agg({{ expression }}) within group (order by {{ order_by }})
{%- endmacro %}

{% macro bigquery__json_array_agg(expression, order_by) -%}
    to_json(array_agg({{ expression }} order by {{ order_by }}))
{%- endmacro %}


{% macro json_empty_array() -%}
    {{ return(adapter.dispatch('json_empty_array', 'signalmail')()) }}
{%- endmacro %}

{% macro default__json_empty_array() -%}
    json('[]')
{%- endmacro %}

{% macro duckdb__json_empty_array() -%}
    '[]'::json
{%- endmacro %}

{% macro postgres__json_empty_array() -%}
    '[]'::jsonb
{%- endmacro %}

{% macro snowflake__json_empty_array() -%}
    array_construct()
{%- endmacro %}

{% macro bigquery__json_empty_array() -%}
    json '[]'
{%- endmacro %}


{% macro json_to_text(expression) -%}
    {{ return(adapter.dispatch('json_to_text', 'signalmail')(expression)) }}
{%- endmacro %}

{% macro default__json_to_text(expression) -%}
    cast({{ expression }} as {{ dbt.type_string() }})
{%- endmacro %}

{% macro snowflake__json_to_text(expression) -%}
    to_json({{ expression }})
{%- endmacro %}

{% macro bigquery__json_to_text(expression) -%}
    to_json_string({{ expression }})
{%- endmacro %}


{% macro identify_trait(name) -%}
    {#- Traits sit at the top level or in context.traits (rudder-sdk-python); top level wins. -#}
    coalesce({{ json_text('traits', [name]) }}, {{ json_text('context', ['traits', name]) }})
{%- endmacro %}


{% macro json_merge(left, right) -%}
    {#- Shallow merge of two JSON objects; keys of `right` win. -#}
    {{ return(adapter.dispatch('json_merge', 'signalmail')(left, right)) }}
{%- endmacro %}

{% macro default__json_merge(left, right) -%}
    json_merge_patch({{ left }}, {{ right }})
{%- endmacro %}

{% macro postgres__json_merge(left, right) -%}
    ({{ left }} || {{ right }})
{%- endmacro %}

{% macro snowflake__json_merge(left, right) -%}
    {{ exceptions.raise_compiler_error("json_merge: Snowflake has no shallow object merge built in; port with object_insert") }}
{%- endmacro %}

{% macro bigquery__json_merge(left, right) -%}
    {{ exceptions.raise_compiler_error("json_merge: port with json_set on BigQuery") }}
{%- endmacro %}

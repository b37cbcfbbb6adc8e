{#-
    JSON access for the loaders' column types: DuckDB `json`, Postgres `jsonb`. `path` is a
    list of object keys.
-#}

{% macro json_text(column, path) -%}
    {{ return(adapter.dispatch('json_text', 'signalmail')(column, path)) }}
{%- endmacro %}

{% macro default__json_text(column, path) -%}
    {{ exceptions.raise_compiler_error(unsupported_adapter('json_text')) }}
{%- endmacro %}

{% macro duckdb__json_text(column, path) -%}
    ({{ column }} ->> '$.{{ path | join(".") }}')
{%- endmacro %}

{% macro postgres__json_text(column, path) -%}
    ({{ column }} #>> '{ {{- path | join(",") -}} }')
{%- endmacro %}


{% macro json_get(column, path) -%}
    {{ return(adapter.dispatch('json_get', 'signalmail')(column, path)) }}
{%- endmacro %}

{% macro default__json_get(column, path) -%}
    {{ exceptions.raise_compiler_error(unsupported_adapter('json_get')) }}
{%- endmacro %}

{% macro duckdb__json_get(column, path) -%}
    json_extract({{ column }}, '$.{{ path | join(".") }}')
{%- endmacro %}

{% macro postgres__json_get(column, path) -%}
    ({{ column }} #> '{ {{- path | join(",") -}} }')
{%- endmacro %}


{% macro json_array_rows(json_array) -%}
    {{ return(adapter.dispatch('json_array_rows', 'signalmail')(json_array)) }}
{%- endmacro %}

{% macro default__json_array_rows(json_array) -%}
    {{ exceptions.raise_compiler_error(unsupported_adapter('json_array_rows')) }}
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


{#- Building JSON for payloads: objects, ordered array aggregation, text output. -#}

{% macro json_object(pairs) -%}
    {{ return(adapter.dispatch('json_object', 'signalmail')(pairs)) }}
{%- endmacro %}

{% macro default__json_object(pairs) -%}
    {{ exceptions.raise_compiler_error(unsupported_adapter('json_object')) }}
{%- endmacro %}

{% macro duckdb__json_object(pairs) -%}
    json_object({% for key, value in pairs %}'{{ key }}', {{ value }}{{ ", " if not loop.last }}{% endfor %})
{%- endmacro %}

{% macro postgres__json_object(pairs) -%}
    jsonb_build_object({% for key, value in pairs %}'{{ key }}', {{ value }}{{ ", " if not loop.last }}{% endfor %})
{%- endmacro %}


{% macro json_array_agg(expression, order_by) -%}
    {{ return(adapter.dispatch('json_array_agg', 'signalmail')(expression, order_by)) }}
{%- endmacro %}

{% macro default__json_array_agg(expression, order_by) -%}
    {{ exceptions.raise_compiler_error(unsupported_adapter('json_array_agg')) }}
{%- endmacro %}

{% macro duckdb__json_array_agg(expression, order_by) -%}
    to_json(list({{ expression }} order by {{ order_by }}))
{%- endmacro %}

{% macro postgres__json_array_agg(expression, order_by) -%}
    jsonb_agg({{ expression }} order by {{ order_by }})
{%- endmacro %}


{% macro json_empty_array() -%}
    {{ return(adapter.dispatch('json_empty_array', 'signalmail')()) }}
{%- endmacro %}

{% macro default__json_empty_array() -%}
    {{ exceptions.raise_compiler_error(unsupported_adapter('json_empty_array')) }}
{%- endmacro %}

{% macro duckdb__json_empty_array() -%}
    '[]'::json
{%- endmacro %}

{% macro postgres__json_empty_array() -%}
    '[]'::jsonb
{%- endmacro %}


{% macro json_to_text(expression) -%}
    {{ return(adapter.dispatch('json_to_text', 'signalmail')(expression)) }}
{%- endmacro %}

{% macro default__json_to_text(expression) -%}
    cast({{ expression }} as {{ dbt.type_string() }})
{%- endmacro %}


{% macro identify_trait(name) -%}
    coalesce({{ json_text('traits', [name]) }}, {{ json_text('context', ['traits', name]) }})
{%- endmacro %}


{% macro json_merge(left, right) -%}
    {{ return(adapter.dispatch('json_merge', 'signalmail')(left, right)) }}
{%- endmacro %}

{% macro default__json_merge(left, right) -%}
    {{ exceptions.raise_compiler_error(unsupported_adapter('json_merge')) }}
{%- endmacro %}

{% macro duckdb__json_merge(left, right) -%}
    json_merge_patch({{ left }}, {{ right }})
{%- endmacro %}

{% macro postgres__json_merge(left, right) -%}
    ({{ left }} || {{ right }})
{%- endmacro %}


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

{% macro spark__json_text(column, path) -%}
    get_json_object({{ column }}, '$.{{ path | join(".") }}')
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

{% macro spark__json_get(column, path) -%}
    {#- JSON is text on Spark: a nested object or array comes back as its JSON text -#}
    get_json_object({{ column }}, '$.{{ path | join(".") }}')
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

{% macro spark__json_array_rows(json_array) -%}
    {#-
        Spark has no lateral join to a set-returning function: a lateral view, which must
        follow the FROM clause's last relation. Each element comes back as its JSON text
        (from_json reads an object or array into a string field as text); not an array: no rows.
    -#}
    lateral view posexplode(
        from_json({{ json_array }}, 'array<string>')
    ) json_elements as element_index, element
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

{% macro spark__json_object(pairs) -%}
    {#- a struct, serialised by json_to_text() or json_stored() (JSON built on Spark) -#}
    named_struct({% for key, value in pairs %}'{{ key }}', {{ value }}{{ ", " if not loop.last }}{% endfor %})
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

{% macro spark__json_array_agg(expression, order_by) -%}
    {#-
        Spark has no ordered collect_list: collect (sort keys, value) structs, sort them with a
        comparator over `order_by` (keys with `desc` descending, nulls last either way, as
        DuckDB), keep the values. An array, serialised with the struct that holds it.
    -#}
    {%- set keys = [] -%}
    {%- for part in order_by.split(',') -%}
        {%- set words = part.strip().split() -%}
        {%- do keys.append((words[0], words | length > 1 and words[1] | lower == 'desc')) -%}
    {%- endfor -%}
    transform(
        array_sort(
            collect_list(named_struct(
                {%- for key, descending in keys %}
                'k{{ loop.index }}', {{ key }},
                {%- endfor %}
                'v', {{ expression }}
            )),
            (left_item, right_item) -> case
                {%- for key, descending in keys %}
                {%- set k = 'k' ~ loop.index %}
                when left_item.{{ k }} is null and right_item.{{ k }} is not null then 1
                when left_item.{{ k }} is not null and right_item.{{ k }} is null then -1
                when left_item.{{ k }} < right_item.{{ k }} then {{ 1 if descending else -1 }}
                when left_item.{{ k }} > right_item.{{ k }} then {{ -1 if descending else 1 }}
                {%- endfor %}
                else 0
            end
        ),
        sorted_item -> sorted_item.v
    )
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

{% macro spark__json_empty_array() -%}
    array()
{%- endmacro %}


{% macro json_to_text(expression) -%}
    {{ return(adapter.dispatch('json_to_text', 'signalmail')(expression)) }}
{%- endmacro %}

{% macro default__json_to_text(expression) -%}
    cast({{ expression }} as {{ dbt.type_string() }})
{%- endmacro %}

{% macro spark__json_to_text(expression) -%}
    {#- what json_merge() returns is already text on Spark (see json_stored()) -#}
    {{ expression }}
{%- endmacro %}


{% macro json_stored(expression) -%}
    {{ return(adapter.dispatch('json_stored', 'signalmail')(expression)) }}
{%- endmacro %}

{% macro default__json_stored(expression) -%}
    {{ expression }}
{%- endmacro %}

{% macro spark__json_stored(expression) -%}
    to_json({{ expression }})
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

{% macro spark__json_merge(left, right) -%}
    {#-
        `left` is stored JSON (text on Spark, json_stored()), `right` a json_object() struct
        whose keys `left` lacks: the text of both objects joined. A struct cannot gain fields
        in Spark SQL, so the result is text.
    -#}
    {%- set right_text = 'to_json(' ~ right ~ ')' -%}
    concat(
        substr({{ left }}, 1, length({{ left }}) - 1),
        case when {{ left }} rlike '^[{]\\s*[}]$' then '' else ',' end,
        substr({{ right_text }}, 2)
    )
{%- endmacro %}

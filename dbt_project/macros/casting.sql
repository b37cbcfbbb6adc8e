{#- Client-supplied values are text of any shape: cast without ever failing a run. -#}

{% macro safe_to_double(expression) -%}
    {{ return(adapter.dispatch('safe_to_double', 'signalmail')(expression)) }}
{%- endmacro %}

{% macro default__safe_to_double(expression) -%}
    try_cast({{ expression }} as double)
{%- endmacro %}

{% macro postgres__safe_to_double(expression) -%}
    {#-
        PostgreSQL has no try_cast, and a well-formed number can still overflow double precision
        ('1e309') or underflow it ('1e-999'): checked as numeric first, in nested CASEs, whose
        order PostgreSQL keeps (AND does not promise one).
    -#}
    case
        when trim({{ expression }}) ~ '^[-+]?([0-9]{1,40}\.?[0-9]{0,40}|\.[0-9]{1,40})([eE][-+]?[0-9]{1,3})?$'
            then case
                when abs(cast(trim({{ expression }}) as numeric)) < 1e300
                    and (cast(trim({{ expression }}) as numeric) = 0
                        or abs(cast(trim({{ expression }}) as numeric)) > 1e-300)
                    then cast(trim({{ expression }}) as double precision)
            end
    end
{%- endmacro %}

{% macro snowflake__safe_to_double(expression) -%}
    try_to_double({{ expression }})
{%- endmacro %}

{% macro bigquery__safe_to_double(expression) -%}
    safe_cast({{ expression }} as float64)
{%- endmacro %}


{% macro text_to_boolean(expression) -%}
    {#- JSON booleans arrive as 'true'/'false' text; anything else is unknown (null). -#}
    case lower(trim({{ expression }}))
        when 'true' then true
        when 'false' then false
        when '1' then true
        when '0' then false
    end
{%- endmacro %}


{% macro hash_fraction(expression) -%}
    {#-
        A deterministic number in [0, 1) from the first 32 bits of md5(expression). Identical on
        every engine, so a user's hold-out group survives a warehouse migration.
    -#}
    ({{ adapter.dispatch('md5_prefix_int', 'signalmail')(expression) }} / 4294967296.0)
{%- endmacro %}

{% macro default__md5_prefix_int(expression) -%}
    cast(('0x' || substr(md5({{ expression }}), 1, 8)) as bigint)
{%- endmacro %}

{% macro postgres__md5_prefix_int(expression) -%}
    (('x' || substr(md5({{ expression }}), 1, 8))::bit(32)::bigint)
{%- endmacro %}

{% macro snowflake__md5_prefix_int(expression) -%}
    to_number(substr(md5({{ expression }}), 1, 8), 'XXXXXXXX')
{%- endmacro %}

{% macro bigquery__md5_prefix_int(expression) -%}
    cast(concat('0x', substr(to_hex(md5({{ expression }})), 1, 8)) as int64)
{%- endmacro %}


{% macro latest_value(column, order_by) -%}
    {#- Aggregate: the last non-null `column` by `order_by` (ties broken by the caller's order). -#}
    {{ return(adapter.dispatch('latest_value', 'signalmail')(column, order_by)) }}
{%- endmacro %}

{% macro default__latest_value(column, order_by) -%}
    (array_agg({{ column }} order by {{ order_by }}) filter (where {{ column }} is not null))[1]
{%- endmacro %}

{% macro duckdb__latest_value(column, order_by) -%}
    {#-
        arg_max over a row of the sort keys: the same answer as the ordered array_agg, ~7x faster
        on DuckDB (no per-group list). Only for all-descending orders, which is how it is used.
    -#}
    {%- set keys = [] -%}
    {%- for part in order_by.split(',') -%}
        {%- set words = part.strip().split() -%}
        {%- if words | length != 2 or words[1] | lower != 'desc' -%}
            {{ return(default__latest_value(column, order_by)) }}
        {%- endif -%}
        {%- do keys.append(words[0]) -%}
    {%- endfor -%}
    arg_max({{ column }}, row({{ keys | join(', ') }})) filter (where {{ column }} is not null)
{%- endmacro %}

{% macro snowflake__latest_value(column, order_by) -%}
    get(array_agg({{ column }}) within group (order by {{ order_by }}), 0)
{%- endmacro %}

{% macro bigquery__latest_value(column, order_by) -%}
    array_agg({{ column }} ignore nulls order by {{ order_by }} limit 1)[safe_offset(0)]
{%- endmacro %}

{#- Client-supplied values are text of any shape: cast without ever failing a run. -#}

{% macro safe_to_double(expression) -%}
    {{ return(adapter.dispatch('safe_to_double', 'signalmail')(expression)) }}
{%- endmacro %}

{% macro default__safe_to_double(expression) -%}
    {{ exceptions.raise_compiler_error(unsupported_adapter('safe_to_double')) }}
{%- endmacro %}

{% macro duckdb__safe_to_double(expression) -%}
    try_cast({{ expression }} as double)
{%- endmacro %}

{% macro spark__safe_to_double(expression) -%}
    {#- Spark's try_cast, like DuckDB's, reads 'inf', 'NaN' and '1e309' (Infinity) too -#}
    try_cast(trim({{ expression }}) as double)
{%- endmacro %}

{% macro postgres__safe_to_double(expression) -%}
    {#-
        What DuckDB's try_cast(... as double) reads, without ever failing: PostgreSQL has no
        try_cast, and a well-formed number can still overflow double precision ('1e309') or
        underflow it ('1e-400'), which fails its cast. Checked as numeric first, in nested
        CASEs, whose order PostgreSQL keeps (AND does not promise one): beyond +-1e300 reads as
        +-Infinity and below 1e-300 as 0 (cuts inside double precision's own, which DuckDB
        keeps: both lie far beyond every client-value bound), 'Infinity' and 'NaN' as
        themselves, so one client value is staged and quarantined alike on both engines. At most 10,000 characters and a three-digit exponent keep the numeric
        cast inside numeric's range; a longer exponent needs no cast to be 0 or +-Infinity.
    -#}
    {%- set text = 'trim(' ~ expression ~ ')' -%}
    case
        when length({{ expression }}) <= 10000
            and {{ text }} ~ '^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?0*[0-9]{1,3})?$'
            then case
                when abs(cast({{ text }} as numeric)) >= 1e300
                    then sign(cast({{ text }} as numeric)) * cast('Infinity' as double precision)
                when abs(cast({{ text }} as numeric)) < 1e-300 then 0
                else cast({{ text }} as double precision)
            end
        when {{ text }} ~* '^([-+]?inf(inity)?|[-+]?nan)$' then cast({{ text }} as double precision)
        when {{ text }} ~ '^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?0*[1-9][0-9]{3,}$'
            then case
                when {{ text }} ~ '^[-+]?0*\.?0*[eE]' or {{ text }} ~ '[eE]-' then 0
                when {{ text }} ~ '^-' then cast('-Infinity' as double precision)
                else cast('Infinity' as double precision)
            end
    end
{%- endmacro %}


{% macro text_to_boolean(expression) -%}
    case lower(trim({{ expression }}))
        when 'true' then true
        when 'false' then false
        when '1' then true
        when '0' then false
    end
{%- endmacro %}


{% macro hash_fraction(expression) -%}
    ({{ adapter.dispatch('md5_prefix_int', 'signalmail')(expression) }} / 4294967296.0)
{%- endmacro %}

{% macro default__md5_prefix_int(expression) -%}
    {{ exceptions.raise_compiler_error(unsupported_adapter('md5_prefix_int')) }}
{%- endmacro %}

{% macro duckdb__md5_prefix_int(expression) -%}
    cast(('0x' || substr(md5({{ expression }}), 1, 8)) as bigint)
{%- endmacro %}

{% macro spark__md5_prefix_int(expression) -%}
    cast(conv(substr(md5({{ expression }}), 1, 8), 16, 10) as bigint)
{%- endmacro %}

{% macro postgres__md5_prefix_int(expression) -%}
    (('x' || substr(md5({{ expression }}), 1, 8))::bit(32)::bigint)
{%- endmacro %}


{% macro latest_value(column, order_by) -%}
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

{% macro spark__latest_value(column, order_by) -%}
    {#-
        max_by over a struct of the sort keys (Spark has no ordered array_agg): a null key
        sorts lowest, so it is DuckDB's `desc nulls last`. Only for all-descending orders.
    -#}
    {%- set keys = [] -%}
    {%- for part in order_by.split(',') -%}
        {%- set words = part.strip().split() -%}
        {%- if words | length != 2 or words[1] | lower != 'desc' -%}
            {{ exceptions.raise_compiler_error(
                "latest_value on Spark needs an all-descending order, got: " ~ order_by
            ) }}
        {%- endif -%}
        {%- do keys.append(words[0]) -%}
    {%- endfor -%}
    max_by({{ column }}, struct({{ keys | join(', ') }})) filter (where {{ column }} is not null)
{%- endmacro %}


{% macro rounded(expression, digits) -%}
    {#- a cast to a scale rounds (half away from zero on both engines); 18 digits is DuckDB's
        64-bit decimal: 38 would be its 128-bit one, 0.5 s more per tick over the payloads -#}
    cast({{ expression }} as numeric(18, {{ digits }}))
{%- endmacro %}

{#-
    Timestamps read while a model compiles, inlined as literals. Docs: literals.yml.
-#}

{% macro timestamp_literal(value) -%}
    {%- set text = value.strftime('%Y-%m-%d %H:%M:%S.%f') if value is not none else '1900-01-01 00:00:00' -%}
    {{ return("cast('" ~ text ~ "' as " ~ dbt.type_timestamp() ~ ")") }}
{%- endmacro %}

{% macro unsupported_adapter(macro_name) -%}
    {{ return(
        "signalmail's dbt project runs on DuckDB and PostgreSQL: " ~ macro_name
        ~ " has no variant for " ~ target.type ~ ". Add a macro " ~ target.type ~ "__"
        ~ macro_name ~ " (docs/signals.md, \"Other warehouses\")."
    ) }}
{%- endmacro %}

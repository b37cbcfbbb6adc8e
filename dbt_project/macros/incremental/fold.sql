{#-
    Folding newly read values into stored state. Docs: fold.yml.
-#}

{% macro later_winner(value, at, message_id, read='read_traits', stored='stored') -%}
    {%- set read_is_later -%}
        {{ read }}.{{ at }} is not null
        and (
            {{ stored }}.{{ at }} is null
            or {{ read }}.{{ at }} > {{ stored }}.{{ at }}
            or (
                {{ read }}.{{ at }} = {{ stored }}.{{ at }}
                and {{ read }}.{{ message_id }} > {{ stored }}.{{ message_id }}
            )
        )
    {%- endset -%}
    {%- for column in [value, at, message_id] %}
    case when {{ read_is_later }} then {{ read }}.{{ column }} else {{ stored }}.{{ column }} end
        as {{ column }}{{ ',' if not loop.last }}
    {%- endfor %}
{%- endmacro %}

{#-
    Values a client sent: read them so that no value, however hostile, stops a build.

    Staging is the only place client text becomes numbers and times. A number outside the
    bounds of dbt_project.yml (`max_price`, `max_quantity`, `max_order_revenue`) is not a real
    price or quantity, and kept as is it would overflow a decimal or integer cast in a rule and
    fail `email_triggers` for every user. So staging keeps it as null (unknown) and
    `quarantined_values` lists it with the reason. See docs/signals.md, "Hostile values".
-#}

{% macro client_number(expression, min_value, max_value) -%}
    {%- set value = safe_to_double(expression) -%}
    case when {{ value }} between {{ min_value }} and {{ max_value }} then {{ value }} end
{%- endmacro %}


{% macro client_number_issue(expression, min_value, max_value) -%}
    {%- set value = safe_to_double(expression) -%}
    case
        when {{ expression }} is null then null
        when {{ value }} is null then 'not a number'
        when {{ value }} < {{ min_value }} then 'below {{ min_value }}'
        when {{ value }} between {{ min_value }} and {{ max_value }} then null
        else 'above {{ max_value }} (or not finite)'
    end
{%- endmacro %}


{% macro client_text(expression, max_length) -%}
    left({{ expression }}, {{ max_length }})
{%- endmacro %}


{% macro event_time(relation) -%}
    {%- set claimed = 'coalesce(' ~ relation ~ '.' ~ adapter.quote('timestamp') ~ ', ' ~ relation ~ '.original_timestamp)' -%}
    case
        when {{ relation }}.received_at is null
            or {{ claimed }} <= {{ dbt.dateadd('minute', var('max_clock_skew_minutes'), relation ~ '.received_at') }}
            then {{ claimed }}
        else {{ relation }}.received_at
    end
{%- endmacro %}

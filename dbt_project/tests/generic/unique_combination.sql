{% test unique_combination(model, column_name, combination_with=[]) %}
{#- Fails on every combination of column_name and combination_with seen more than once. -#}
{%- set columns = [column_name] + combination_with -%}
select
    {{ columns | join(', ') }},
    count(*) as occurrences
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}

{% test expression_is_true(model, expression, column_name=none, where_clause=none) %}
{#- Fails on every row where the boolean SQL expression is false or null. -#}
select *
from {{ model }}
where not coalesce(({{ expression }}), false)
    {% if where_clause %}and ({{ where_clause }}){% endif %}
{% endtest %}

{% test accepted_range(model, column_name, min_value=none, max_value=none, inclusive=true) %}
{#- Fails on every non-null value outside [min_value, max_value] (or the open interval). -#}
select *
from {{ model }}
where {{ column_name }} is not null
    and (
        1 = 0
        {% if min_value is not none %}
        or {{ column_name }} {{ '<' if inclusive else '<=' }} {{ min_value }}
        {% endif %}
        {% if max_value is not none %}
        or {{ column_name }} {{ '>' if inclusive else '>=' }} {{ max_value }}
        {% endif %}
    )
{% endtest %}

{%- set rules = [
    'int_triggers__cart_abandonment',
    'int_triggers__browse_abandonment',
    'int_triggers__product_recommendations',
    'int_triggers__re_engagement',
    'int_triggers__post_purchase',
    'int_triggers__search_abandonment',
] -%}

with

{% for rule in rules %}
{{ rule.replace('int_triggers__', '') }} as (
    select * from {{ ref(rule) }}
),
{% endfor %}

unioned as (
    {%- for rule in rules %}
    select
        trigger_id,
        campaign,
        user_id,
        situation_at,
        received_at,
        eligible_at,
        expires_at,
        {{ json_stored('payload') }} as payload
    from {{ rule.replace('int_triggers__', '') }}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
)

select * from unioned

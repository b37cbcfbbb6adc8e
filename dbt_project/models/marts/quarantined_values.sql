{{ config(materialized='table', tags=['nightly']) }}

{#-
    Client values staging set aside as unusable, with the reason: a price, quantity, order
    revenue or engaged time that is not a number or outside the bounds of dbt_project.yml
    (`max_price`, `max_quantity`, `max_order_revenue`, `max_engaged_seconds_per_ping`). Staging reads each as null (a quantity as 1), so the
    event still counts and no value can stop a build; this table says what was set aside and
    why. Built nightly; the nightly test `no_quarantined_values` warns with the count.
-#}

with

product_events as (
    select * from {{ ref('stg_rudderstack__product_events') }}
),

tracks as (
    select * from {{ ref('stg_rudderstack__tracks') }}
),

product_values as (
    {%- for field, bound in [('price', 'max_price'), ('quantity', 'max_quantity')] %}
    select
        message_id,
        product_index,
        received_at,
        event_name,
        user_id,
        anonymous_id,
        '{{ field }}' as field,
        {{ field }}_text as client_value,
        {{ client_number_issue(field ~ '_text', 0, var(bound)) }} as reason
    from product_events
    where {{ field }}_text is not null
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
),

order_values as (
    select
        message_id,
        0 as product_index,
        received_at,
        event_name,
        user_id,
        anonymous_id,
        'revenue' as field,
        revenue_text as client_value,
        {{ client_number_issue('revenue_text', 0, var('max_order_revenue')) }} as reason
    from tracks
    where revenue_text is not null
),

engagement_values as (
    select
        message_id,
        0 as product_index,
        received_at,
        event_name,
        user_id,
        anonymous_id,
        'engaged_seconds' as field,
        engaged_seconds_text as client_value,
        {{ client_number_issue('engaged_seconds_text', 0, var('max_engaged_seconds_per_ping')) }}
            as reason
    from tracks
    where event_name = 'Page Engaged'
        and engaged_seconds_text is not null
),

final as (
    select * from product_values
    where reason is not null
    union all
    select * from order_values
    where reason is not null
    union all
    select * from engagement_values
    where reason is not null
)

select * from final

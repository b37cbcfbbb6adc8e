{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='order_id',
        indexes=postgres_indexes([['order_id'], ['received_at']]),
    )
}}

-- restitched_anonymous_ids() reads it on incremental runs:
-- depends_on: {{ ref('int_identity_map') }}

{#
    Incremental on order_id: the items of orders whose kept report was received since the mark
    (read from the newest interactions), and the stored items of older orders whose buyer
    changed because their anonymous id was stitched (only user_id changes for those).
-#}

with

interactions as (
    select * from {{ ref('int_product_interactions') }}
),

orders as (
    select * from {{ ref('int_orders') }}
),

{% if is_incremental() %}
{%- set cutoff = incremental_cutoff() %}
{% endif %}

items as (
    -- only the items of the order report that int_orders kept
    select
        orders.order_id,
        orders.user_id,
        orders.ordered_at,
        orders.received_at,
        interactions.product_index,
        interactions.product_id,
        interactions.product_name,
        interactions.brand,
        interactions.category,
        interactions.price,
        interactions.quantity
    from interactions
    inner join orders
        on interactions.message_id = orders.message_id
    where interactions.interaction_type = 'purchase'
    {% if is_incremental() %}
        -- a report's items share its message, so its received_at
        and interactions.received_at >= {{ cutoff }}
        and orders.received_at >= {{ cutoff }}
    {% endif %}
),

deduplicated as (
    select
        order_id,
        user_id,
        ordered_at,
        received_at,
        product_id,
        min(product_name) as product_name,
        min(brand) as brand,
        min(category) as category,
        min(price) as price,
        sum(quantity) as quantity
    from items
    group by order_id, user_id, ordered_at, received_at, product_id
),

changed as (
    select * from deduplicated
    {% if is_incremental() %}
    union all
    select
        stored.order_id,
        orders.user_id,
        stored.ordered_at,
        stored.received_at,
        stored.product_id,
        stored.product_name,
        stored.brand,
        stored.category,
        stored.price,
        stored.quantity
    from {{ this }} as stored
    inner join orders
        on stored.order_id = orders.order_id
    where orders.received_at < {{ cutoff }}
        and orders.anonymous_id in (
            {{ restitched_anonymous_ids(cutoff) }}
        )
    {% endif %}
)

select * from changed

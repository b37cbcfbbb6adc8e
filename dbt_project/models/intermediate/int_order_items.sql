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
    Incremental on order_id. The block at the top sets what a run reads; the SQL below it is
    the same for a full build and a tick. A tick reads the items of orders whose kept report
    was received since the mark (read from the newest interactions), and carries the stored
    items of older orders whose buyer changed because their anonymous id was stitched (only
    user_id changes for those).
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
purchases as (
    -- a report's items share its message, so its received_at
    select * from interactions
    where interaction_type = 'purchase'
        and received_at >= {{ cutoff }}
),

reports as (
    select * from orders
    where received_at >= {{ cutoff }}
),

restitched as (
    -- the stored items of older orders whose anonymous id was stitched since: a new buyer
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
),

{% else %}

purchases as (
    select * from interactions
    where interaction_type = 'purchase'
),

reports as (
    select * from orders
),

restitched as (
    -- a full build reads every order's items and carries none: the columns, with no row
    select
        order_id,
        user_id,
        event_at as ordered_at,
        received_at,
        product_id,
        product_name,
        brand,
        category,
        price,
        quantity
    from interactions
    where 1 = 0
),
{% endif %}

items as (
    -- only the items of the order report that int_orders kept
    select
        reports.order_id,
        reports.user_id,
        reports.ordered_at,
        reports.received_at,
        purchases.product_index,
        purchases.product_id,
        purchases.product_name,
        purchases.brand,
        purchases.category,
        purchases.price,
        purchases.quantity
    from purchases
    inner join reports
        on purchases.message_id = reports.message_id
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
        -- an order's lines of one product add up, to at most max_quantity (as a cart line)
        least(sum(quantity), {{ var('max_quantity') }}) as quantity
    from items
    group by order_id, user_id, ordered_at, received_at, product_id
),

changed as (
    select * from deduplicated
    union all
    select * from restitched
)

select * from changed

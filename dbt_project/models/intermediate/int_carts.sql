{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='user_id',
        indexes=postgres_indexes([['user_id'], ['last_received_at']]),
    )
}}

-- touched_users() reads these on incremental runs:
-- depends_on: {{ ref('int_events') }}
-- depends_on: {{ ref('int_identity_map') }}

with

cart_items as (
    select * from {{ ref('int_cart_items') }}
),

interactions as (
    select * from {{ ref('int_product_interactions') }}
),

orders as (
    select * from {{ ref('int_orders') }}
),

{% if is_incremental() %}
touched as {{ cte_hint('materialized') }} (
    {{ touched_users(incremental_cutoff('last_received_at')) }}
),
{% endif %}

cart_activity as (
    -- viewing the cart or starting checkout is activity on it too
    select
        coalesce(cart_id, 'user:' || user_id) as cart_key,
        user_id,
        max(event_at) as last_activity_at,
        max(received_at) as last_received_at
    from interactions
    where interaction_type in ('add', 'remove', 'cart_view', 'checkout')
        and user_id is not null
        {% if is_incremental() %}
        and user_id in (select user_id from touched)
        {% endif %}
    group by coalesce(cart_id, 'user:' || user_id), user_id
),

cart_contents as (
    select
        cart_key,
        user_id,
        sum(case when quantity > 0 then 1 else 0 end) as item_count,
        sum(quantity) as quantity,
        sum(quantity * coalesce(price, 0)) as cart_value,
        max(currency) as currency,
        min(first_added_at) as created_at
    from cart_items
    {% if is_incremental() %}
    where user_id in (select user_id from touched)
    {% endif %}
    group by cart_key, user_id
),

carts as (
    select
        cart_activity.cart_key,
        cart_activity.user_id,
        case when cart_activity.cart_key like 'user:%' then null else cart_activity.cart_key end
            as cart_id,
        cart_contents.created_at,
        cart_activity.last_activity_at,
        coalesce(cart_contents.item_count, 0) as item_count,
        coalesce(cart_contents.quantity, 0) as quantity,
        coalesce(cart_contents.cart_value, 0) as cart_value,
        cart_contents.currency,
        cart_activity.last_received_at
    from cart_activity
    left join cart_contents
        on cart_activity.cart_key = cart_contents.cart_key
        and cart_activity.user_id = cart_contents.user_id
),

conversions as (
    -- the first order placed from this cart, or by its owner after the cart's last change
    select
        carts.cart_key,
        carts.user_id,
        orders.order_id,
        orders.ordered_at,
        row_number() over (
            partition by carts.cart_key, carts.user_id
            order by orders.ordered_at, orders.order_id
        ) as order_rank
    from carts
    inner join orders
        on orders.user_id = carts.user_id
        and (
            orders.cart_id = carts.cart_id
            or orders.ordered_at >= carts.last_activity_at
        )
),

final as (
    select
        carts.cart_key,
        carts.user_id,
        carts.cart_id,
        carts.created_at,
        carts.last_activity_at,
        carts.item_count,
        carts.quantity,
        carts.cart_value,
        carts.currency,
        conversions.order_id as converted_order_id,
        conversions.ordered_at as converted_at,
        conversions.order_id is not null as is_converted,
        carts.last_received_at
    from carts
    left join conversions
        on carts.cart_key = conversions.cart_key
        and carts.user_id = conversions.user_id
        and conversions.order_rank = 1
)

select * from final

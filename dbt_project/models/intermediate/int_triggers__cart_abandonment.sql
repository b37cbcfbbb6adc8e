with

carts as (
    select * from {{ ref('int_carts') }}
),

cart_items as (
    select * from {{ ref('int_cart_items') }}
),

abandoned as (
    -- idle for the delay, items still in it, no order from it or by its owner since, and not
    -- yet expired: an expired cart is never the latest live one (any later cart has a later
    -- expiry), and leaving it out early keeps the ranking to the last days' carts instead of
    -- every cart ever abandoned
    select
        cart_key,
        user_id,
        last_activity_at,
        last_received_at,
        cart_value,
        coalesce(currency, '{{ var("default_currency") }}') as currency,
        row_number() over (
            partition by user_id order by last_activity_at desc, cart_key
        ) as cart_rank
    from carts
    where item_count > 0
        and not is_converted
        and last_activity_at
            <= {{ dbt.dateadd('minute', -1 * var('cart_abandon_minutes'), now_utc()) }}
        and last_activity_at > {{ dbt.dateadd(
            'hour',
            -1 * var('cart_abandon_expire_hours'),
            dbt.dateadd('minute', -1 * var('cart_abandon_minutes'), now_utc()),
        ) }}
),

latest_abandoned as (
    -- one email per user: the cart they touched last
    select * from abandoned
    where cart_rank = 1
),

item_lists as (
    select
        cart_items.cart_key,
        cart_items.user_id,
        {{ json_array_agg(
            product_merge_var('cart_items', 'cart_items.quantity'),
            'cart_items.last_changed_at desc, cart_items.product_id'
        ) }} as products
    from cart_items
    inner join latest_abandoned
        on cart_items.cart_key = latest_abandoned.cart_key
        and cart_items.user_id = latest_abandoned.user_id
    where cart_items.quantity > 0
    group by cart_items.cart_key, cart_items.user_id
),

final as (
    select
        {{ trigger_id(["'cart_abandonment'", 'latest_abandoned.cart_key', 'latest_abandoned.last_activity_at']) }}
            as trigger_id,
        'cart_abandonment' as campaign,
        latest_abandoned.user_id,
        latest_abandoned.last_activity_at as situation_at,
        -- the cart's newest event reached the warehouse then: the email cannot be due earlier
        latest_abandoned.last_received_at as received_at,
        {{ dbt.dateadd('minute', var('cart_abandon_minutes'), 'latest_abandoned.last_activity_at') }}
            as eligible_at,
        {{ dbt.dateadd(
            'hour',
            var('cart_abandon_expire_hours'),
            dbt.dateadd('minute', var('cart_abandon_minutes'), 'latest_abandoned.last_activity_at')
        ) }} as expires_at,
        {{ json_object([
            ('cart_id', "case when latest_abandoned.cart_key like 'user:%' then null else latest_abandoned.cart_key end"),
            ('products', 'item_lists.products'),
            ('cart_total', 'round(cast(latest_abandoned.cart_value as numeric), 2)'),
            ('currency', 'latest_abandoned.currency'),
        ]) }} as payload
    from latest_abandoned
    inner join item_lists
        on latest_abandoned.cart_key = item_lists.cart_key
        and latest_abandoned.user_id = item_lists.user_id
)

select * from final

with

carts as (
    select * from {{ ref('int_carts') }}
),

cart_items as (
    select * from {{ ref('int_cart_items') }}
),

similarity as (
    select * from {{ nightly_ref('int_item_similarity') }}
),

bestsellers as (
    select * from {{ nightly_ref('int_bestsellers') }}
),

products as (
    select * from {{ nightly_ref('int_products') }}
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
            partition by user_id order by last_activity_at desc, cart_key asc
        ) as cart_rank
    from carts
    where item_count > 0
        and not is_converted
        and last_activity_at <= {{ dbt.dateadd(
            'minute', -1 * var('cart_abandon_minutes'), now_utc()
        ) }}
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

abandoned_items as (
    -- what is still in the reminded carts: the lists below start from these rows alone, not
    -- from every cart line ever stored
    select cart_items.*
    from cart_items
    inner join latest_abandoned
        on cart_items.cart_key = latest_abandoned.cart_key
        and cart_items.user_id = latest_abandoned.user_id
    where cart_items.quantity > 0
),

item_lists as (
    select
        abandoned_items.cart_key,
        abandoned_items.user_id,
        {{ json_array_agg(
            product_merge_var('abandoned_items', 'abandoned_items.quantity'),
            'abandoned_items.last_changed_at desc, abandoned_items.product_id'
        ) }} as products
    from abandoned_items
    group by abandoned_items.cart_key, abandoned_items.user_id
),

in_cart as (
    -- the reminded carts' products: what the recommendations start from, and never show
    select distinct
        cart_key,
        user_id,
        product_id,
        category
    from abandoned_items
),

candidates as (
    -- complements: products viewed or bought together with what is in the cart
    select
        in_cart.cart_key,
        in_cart.user_id,
        similarity.related_product_id as product_id,
        sum(similarity.similarity) as score
    from in_cart
    inner join similarity
        on in_cart.product_id = similarity.product_id
    group by in_cart.cart_key, in_cart.user_id, similarity.related_product_id

    union all

    -- the fallback, always below any complement: the bestsellers of the cart's categories,
    -- then of the whole shop
    select
        in_cart.cart_key,
        in_cart.user_id,
        bestsellers.product_id,
        -1.0 * min(
            case
                when bestsellers.category = in_cart.category then bestsellers.category_rank
                else 1000 + bestsellers.overall_rank
            end
        ) as score
    from in_cart
    inner join bestsellers
        on in_cart.category = bestsellers.category
        or bestsellers.overall_rank <= {{ var('recommendations_per_user') }}
    group by in_cart.cart_key, in_cart.user_id, bestsellers.product_id
),

ranked_recommendations as (
    select
        best.cart_key,
        best.user_id,
        best.score,
        products.*,
        row_number() over (
            partition by best.cart_key, best.user_id order by best.score desc, best.product_id asc
        ) as recommendation_rank
    from (
        select
            cart_key,
            user_id,
            product_id,
            max(score) as score
        from candidates
        group by cart_key, user_id, product_id
    ) as best
    inner join products
        on best.product_id = products.product_id
    left join in_cart
        on best.cart_key = in_cart.cart_key
        and best.user_id = in_cart.user_id
        and best.product_id = in_cart.product_id
    where in_cart.product_id is null
),

recommendation_lists as (
    select
        cart_key,
        user_id,
        {{ json_array_agg(
            product_merge_var('ranked_recommendations'),
            'ranked_recommendations.recommendation_rank'
        ) }} as recommendation_items
    from ranked_recommendations
    where recommendation_rank <= {{ var('recommendations_per_user') }}
    group by cart_key, user_id
),

final as (
    select
        {{ trigger_id([
            "'cart_abandonment'",
            'latest_abandoned.cart_key',
            'latest_abandoned.last_activity_at',
        ]) }} as trigger_id,
        'cart_abandonment' as campaign,
        latest_abandoned.user_id,
        latest_abandoned.last_activity_at as situation_at,
        -- the cart's newest event reached the warehouse then: the email cannot be due earlier
        latest_abandoned.last_received_at as received_at,
        {{ dbt.dateadd(
            'minute', var('cart_abandon_minutes'), 'latest_abandoned.last_activity_at'
        ) }} as eligible_at,
        {{ dbt.dateadd(
            'hour',
            var('cart_abandon_expire_hours'),
            dbt.dateadd('minute', var('cart_abandon_minutes'), 'latest_abandoned.last_activity_at')
        ) }} as expires_at,
        {{ json_object([
            ('cart_id', "case when latest_abandoned.cart_key like 'user:%' then null else latest_abandoned.cart_key end"),
            ('products', 'item_lists.products'),
            ('cart_total', rounded('latest_abandoned.cart_value', 2)),
            ('currency', 'latest_abandoned.currency'),
            ('recommendations', 'coalesce(recommendation_lists.recommendation_items, ' ~ json_empty_array() ~ ')'),
        ]) }} as payload
    from latest_abandoned
    inner join item_lists
        on latest_abandoned.cart_key = item_lists.cart_key
        and latest_abandoned.user_id = item_lists.user_id
    left join recommendation_lists
        on latest_abandoned.cart_key = recommendation_lists.cart_key
        and latest_abandoned.user_id = recommendation_lists.user_id
)

select * from final

{{ config(materialized='table', tags=['nightly']) }}

with

interactions as (
    select * from {{ ref('int_product_interactions') }}
),

order_items as (
    select * from {{ ref('int_order_items') }}
),

viewed as (
    -- who looked at what: anonymous browsing counts too (it is still one shopper's interest)
    select distinct
        coalesce(user_id, 'anonymous:' || anonymous_id) as shopper_id,
        product_id
    from interactions
    where interaction_type in ('view', 'add', 'cart_view', 'checkout')
        and event_at >= {{ dbt.dateadd(
            'day', -1 * var('recommendation_lookback_days'), now_utc()
        ) }}
),

purchased as (
    select distinct
        order_id,
        product_id
    from order_items
    where ordered_at >= {{ dbt.dateadd(
        'day', -1 * var('recommendation_lookback_days'), now_utc()
    ) }}
),

view_counts as (
    select
        product_id,
        count(*) as viewers
    from viewed
    group by product_id
),

purchase_counts as (
    select
        product_id,
        count(*) as orders
    from purchased
    group by product_id
),

co_views as (
    select
        left_side.product_id,
        right_side.product_id as related_product_id,
        count(*) as co_view_count
    from viewed as left_side
    inner join viewed as right_side
        on left_side.shopper_id = right_side.shopper_id
        and left_side.product_id <> right_side.product_id
    group by left_side.product_id, right_side.product_id
),

co_purchases as (
    select
        left_side.product_id,
        right_side.product_id as related_product_id,
        count(*) as co_purchase_count
    from purchased as left_side
    inner join purchased as right_side
        on left_side.order_id = right_side.order_id
        and left_side.product_id <> right_side.product_id
    group by left_side.product_id, right_side.product_id
),

pairs as (
    select
        coalesce(co_views.product_id, co_purchases.product_id) as product_id,
        coalesce(co_views.related_product_id, co_purchases.related_product_id)
            as related_product_id,
        coalesce(co_views.co_view_count, 0) as co_view_count,
        coalesce(co_purchases.co_purchase_count, 0) as co_purchase_count
    from co_views
    full outer join co_purchases
        on co_views.product_id = co_purchases.product_id
        and co_views.related_product_id = co_purchases.related_product_id
),

scored as (
    -- cosine normalisation: co-occurrence divided by the geometric mean of both products'
    -- own popularity, so a bestseller that co-occurs with everything scores low with each
    select
        pairs.product_id,
        pairs.related_product_id,
        pairs.co_view_count,
        pairs.co_purchase_count,
        (pairs.co_view_count + {{ var('co_purchase_weight') }} * pairs.co_purchase_count)
        / sqrt(
            (
                coalesce(left_views.viewers, 0)
                + {{ var('co_purchase_weight') }} * coalesce(left_orders.orders, 0)
            )
            * (
                coalesce(right_views.viewers, 0)
                + {{ var('co_purchase_weight') }} * coalesce(right_orders.orders, 0)
            )
        ) as similarity
    from pairs
    left join view_counts as left_views
        on pairs.product_id = left_views.product_id
    left join purchase_counts as left_orders
        on pairs.product_id = left_orders.product_id
    left join view_counts as right_views
        on pairs.related_product_id = right_views.product_id
    left join purchase_counts as right_orders
        on pairs.related_product_id = right_orders.product_id
    where pairs.co_view_count + pairs.co_purchase_count
        >= {{ var('recommendation_min_pair_count') }}
),

final as (
    -- item-kNN: only each product's nearest neighbours, which keeps every join downstream
    -- proportional to the catalogue rather than to the square of it
    select
        product_id,
        related_product_id,
        co_view_count,
        co_purchase_count,
        similarity
    from (
        select
            scored.*,
            row_number() over (
                partition by product_id order by similarity desc, related_product_id asc
            ) as neighbour_rank
        from scored
    ) as ranked
    where neighbour_rank <= {{ var('similar_items_per_product') }}
)

select * from final

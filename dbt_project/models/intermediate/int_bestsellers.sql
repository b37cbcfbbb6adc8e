{{ config(materialized='table', tags=['nightly']) }}

-- What sells, per category and overall, within `recommendation_lookback_days`: the fallback of
-- every recommendation list when a shopper's own products have too few similar items.

with

interactions as (
    select * from {{ ref('int_product_interactions') }}
),

order_items as (
    select * from {{ ref('int_order_items') }}
),

products as (
    select * from {{ ref('int_products') }}
),

orders_per_product as (
    select
        product_id,
        count(distinct order_id) as order_count
    from order_items
    where ordered_at >= {{ dbt.dateadd(
        'day', -1 * var('recommendation_lookback_days'), now_utc()
    ) }}
    group by product_id
),

viewers_per_product as (
    select
        product_id,
        count(distinct coalesce(user_id, 'anonymous:' || anonymous_id)) as viewer_count
    from interactions
    where interaction_type = 'view'
        and event_at >= {{ dbt.dateadd(
            'day', -1 * var('recommendation_lookback_days'), now_utc()
        ) }}
    group by product_id
),

scored as (
    -- an order weighs as much as `co_purchase_weight` viewers, as in item similarity
    select
        products.product_id,
        products.category,
        coalesce(orders_per_product.order_count, 0) as order_count,
        coalesce(viewers_per_product.viewer_count, 0) as viewer_count,
        cast(
            coalesce(orders_per_product.order_count, 0) * {{ var('co_purchase_weight') }}
            + coalesce(viewers_per_product.viewer_count, 0)
            as {{ dbt.type_float() }}
        ) as popularity
    from products
    left join orders_per_product
        on products.product_id = orders_per_product.product_id
    left join viewers_per_product
        on products.product_id = viewers_per_product.product_id
    where products.product_name is not null
),

ranked as (
    select
        scored.*,
        row_number() over (
            partition by category order by popularity desc, product_id asc
        ) as category_rank,
        row_number() over (order by popularity desc, product_id asc) as overall_rank
    from scored
    where popularity > 0
)

select * from ranked
where category_rank <= {{ var('recommendations_per_user') }}
    or overall_rank <= {{ var('recommendations_per_user') }}

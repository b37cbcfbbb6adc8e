with

interactions as (
    select * from {{ ref('int_product_interactions') }}
),

orders as (
    select * from {{ ref('int_orders') }}
),

items as (
    -- only the items of the order report that int_orders kept
    select
        orders.order_id,
        orders.user_id,
        orders.ordered_at,
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
),

deduplicated as (
    select
        order_id,
        user_id,
        ordered_at,
        product_id,
        min(product_name) as product_name,
        min(brand) as brand,
        min(category) as category,
        min(price) as price,
        sum(quantity) as quantity
    from items
    group by order_id, user_id, ordered_at, product_id
)

select * from deduplicated

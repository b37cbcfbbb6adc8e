with

orders as (
    select * from {{ ref('int_orders') }}
),

order_items as (
    select * from {{ ref('int_order_items') }}
),

similarity as (
    select * from {{ nightly_ref('int_item_similarity') }}
),

products as (
    select * from {{ nightly_ref('int_products') }}
),

due_orders as (
    -- orders whose follow-up is due now and not yet expired
    select
        order_id,
        user_id,
        ordered_at,
        received_at,
        revenue,
        coalesce(currency, '{{ var("default_currency") }}') as currency
    from orders
    where user_id is not null
        and ordered_at <= {{ dbt.dateadd('day', -1 * var('post_purchase_days'), now_utc()) }}
        and ordered_at > {{ dbt.dateadd(
            'day', -1 * (var('post_purchase_days') + var('post_purchase_expire_days')), now_utc()
        ) }}
),

due_items as (
    -- what the due orders bought: the lists below start from these rows alone, not from every
    -- order item ever stored
    select order_items.*
    from order_items
    inner join due_orders
        on order_items.order_id = due_orders.order_id
),

related as (
    -- products similar to what was bought, minus what was bought
    select
        due_items.order_id,
        similarity.related_product_id as product_id,
        sum(similarity.similarity) as score
    from due_items
    inner join similarity
        on due_items.product_id = similarity.product_id
    left join due_items as bought
        on due_items.order_id = bought.order_id
        and similarity.related_product_id = bought.product_id
    where bought.product_id is null
    group by due_items.order_id, similarity.related_product_id
),

ranked_related as (
    select
        related.order_id,
        related.score,
        products.*,
        row_number() over (
            partition by related.order_id order by related.score desc, related.product_id asc
        ) as related_rank
    from related
    inner join products
        on related.product_id = products.product_id
),

related_lists as (
    select
        order_id,
        {{ json_array_agg(product_merge_var('ranked_related'), 'ranked_related.related_rank') }}
            as recommendation_items
    from ranked_related
    where related_rank <= {{ var('recommendations_per_user') }}
    group by order_id
),

items_with_links as (
    -- order items carry no links; take them from the catalogue
    select
        due_items.order_id,
        due_items.product_id,
        due_items.product_name,
        due_items.brand,
        due_items.category,
        due_items.price,
        due_items.quantity,
        products.product_url,
        products.image_url
    from due_items
    left join products
        on due_items.product_id = products.product_id
),

item_lists as (
    select
        order_id,
        {{ json_array_agg(
            product_merge_var('items_with_links', 'items_with_links.quantity'),
            'items_with_links.product_id'
        ) }} as products
    from items_with_links
    group by order_id
),

final as (
    select
        {{ trigger_id(["'post_purchase'", 'due_orders.order_id']) }} as trigger_id,
        'post_purchase' as campaign,
        due_orders.user_id,
        cast(null as {{ dbt.type_timestamp() }}) as situation_at,
        due_orders.received_at,
        {{ dbt.dateadd('day', var('post_purchase_days'), 'due_orders.ordered_at') }} as eligible_at,
        {{ dbt.dateadd(
            'day',
            var('post_purchase_expire_days'),
            dbt.dateadd('day', var('post_purchase_days'), 'due_orders.ordered_at')
        ) }} as expires_at,
        {{ json_object([
            ('order_id', 'due_orders.order_id'),
            ('order_total', rounded('due_orders.revenue', 2)),
            ('currency', 'due_orders.currency'),
            ('products', 'coalesce(item_lists.products, ' ~ json_empty_array() ~ ')'),
            ('recommendations', 'related_lists.recommendation_items'),
        ]) }} as payload
    from due_orders
    inner join related_lists
        on due_orders.order_id = related_lists.order_id
    left join item_lists
        on due_orders.order_id = item_lists.order_id
)

select * from final

with

interactions as (
    select * from {{ ref('int_product_interactions') }}
),

searches as (
    select * from {{ ref('int_searches') }}
),

window_views as (
    select
        user_id,
        product_id,
        count(*) as view_count,
        min(event_at) as first_viewed_at,
        max(event_at) as last_viewed_at
    from interactions
    where interaction_type = 'view'
        and user_id is not null
        and event_at >= {{ dbt.dateadd('hour', -1 * var('browse_window_hours'), now_utc()) }}
        and event_at <= {{ now_utc() }}
    group by user_id, product_id
),

later_adds as (
    -- an add to cart or a purchase of the product after browsing began ends the situation
    select distinct
        window_views.user_id,
        window_views.product_id
    from window_views
    inner join interactions
        on window_views.user_id = interactions.user_id
        and window_views.product_id = interactions.product_id
        and interactions.interaction_type in ('add', 'purchase')
        and interactions.event_at >= window_views.first_viewed_at
),

abandoned as (
    select
        window_views.user_id,
        window_views.product_id,
        window_views.view_count,
        window_views.first_viewed_at,
        window_views.last_viewed_at,
        row_number() over (
            partition by window_views.user_id
            order by window_views.view_count desc, window_views.last_viewed_at desc,
                window_views.product_id
        ) as product_rank
    from window_views
    left join later_adds
        on window_views.user_id = later_adds.user_id
        and window_views.product_id = later_adds.product_id
    where later_adds.product_id is null
        and window_views.view_count >= {{ var('browse_min_views') }}
        and window_views.last_viewed_at
            <= {{ dbt.dateadd('minute', -1 * var('browse_abandon_minutes'), now_utc()) }}
),

top_product as (
    select * from abandoned
    where product_rank = 1
),

product_details as (
    -- the product as the user last saw it
    select
        interactions.user_id,
        interactions.product_id,
        interactions.product_name,
        interactions.brand,
        interactions.category,
        interactions.product_url,
        interactions.image_url,
        interactions.price,
        interactions.currency,
        row_number() over (
            partition by interactions.user_id, interactions.product_id
            order by interactions.event_at desc, interactions.message_id desc
        ) as detail_rank
    from interactions
    inner join top_product
        on interactions.user_id = top_product.user_id
        and interactions.product_id = top_product.product_id
        and interactions.interaction_type = 'view'
        and interactions.event_at = top_product.last_viewed_at
),

last_search as (
    select
        searches.user_id,
        searches.search_term,
        row_number() over (
            partition by searches.user_id order by searches.searched_at desc, searches.message_id desc
        ) as search_rank
    from searches
    inner join top_product
        on searches.user_id = top_product.user_id
    where searches.searched_at >= {{ dbt.dateadd('hour', -1 * var('browse_window_hours'), now_utc()) }}
        and searches.searched_at <= top_product.last_viewed_at
),

final as (
    select
        {{ trigger_id(["'browse_abandonment'", 'top_product.user_id', 'top_product.product_id', 'top_product.last_viewed_at']) }}
            as trigger_id,
        'browse_abandonment' as campaign,
        top_product.user_id,
        top_product.first_viewed_at as situation_at,
        {{ dbt.dateadd('minute', var('browse_abandon_minutes'), 'top_product.last_viewed_at') }}
            as eligible_at,
        {{ dbt.dateadd(
            'hour',
            var('browse_abandon_expire_hours'),
            dbt.dateadd('minute', var('browse_abandon_minutes'), 'top_product.last_viewed_at')
        ) }} as expires_at,
        {{ json_object([
            ('products', json_array_agg(product_merge_var('product_details'), 'product_details.product_id')),
            ('currency', 'min(product_details.currency)'),
            ('search_term', 'min(last_search.search_term)'),
            ('view_count', 'top_product.view_count'),
        ]) }} as payload
    from top_product
    inner join product_details
        on top_product.user_id = product_details.user_id
        and product_details.detail_rank = 1
    left join last_search
        on top_product.user_id = last_search.user_id
        and last_search.search_rank = 1
    group by
        top_product.user_id,
        top_product.product_id,
        top_product.first_viewed_at,
        top_product.last_viewed_at,
        top_product.view_count
)

select * from final

with

interactions as (
    select * from {{ ref('int_product_interactions') }}
),

searches as (
    select * from {{ ref('int_searches') }}
),

engagement as (
    select * from {{ ref('int_product_engagement') }}
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

window_interactions as (
    -- one pass over the window: views, and adds or purchases that end the situation
    select
        user_id,
        product_id,
        sum(case when interaction_type = 'view' then 1 else 0 end) as view_count,
        min(case when interaction_type = 'view' then event_at end) as first_viewed_at,
        max(case when interaction_type = 'view' then event_at end) as last_viewed_at,
        max(case when interaction_type = 'view' then received_at end) as last_view_received_at,
        -- an add ends the situation when it came after the views; a purchase in the window
        -- whenever it came (views after it are a buyer looking at what they bought), so it
        -- counts as now
        max(
            case
                when interaction_type = 'add' then event_at
                when interaction_type = 'purchase' then {{ now_utc() }}
            end
        ) as last_added_at,
        {{ latest_value('product_name', 'event_at desc, message_id desc') }} as product_name,
        {{ latest_value('brand', 'event_at desc, message_id desc') }} as brand,
        {{ latest_value('category', 'event_at desc, message_id desc') }} as category,
        {{ latest_value('product_url', 'event_at desc, message_id desc') }} as product_url,
        {{ latest_value('image_url', 'event_at desc, message_id desc') }} as image_url,
        {{ latest_value('price', 'event_at desc, message_id desc') }} as price,
        coalesce(
            {{ latest_value('currency', 'event_at desc, message_id desc') }},
            '{{ var("default_currency") }}'
        ) as currency
    from interactions
    where interaction_type in ('view', 'add', 'purchase')
        and user_id is not null
        and event_at >= {{ dbt.dateadd('hour', -1 * var('browse_window_hours'), now_utc()) }}
        and event_at <= {{ now_utc() }}
    group by user_id, product_id
),

product_reads as (
    -- time on content in the window: engaged seconds per product, each page view counted up
    -- to `max_engaged_seconds_per_view`
    select
        user_id,
        product_id,
        sum(view_seconds) as engaged_seconds
    from (
        select
            user_id,
            product_id,
            page_view_id,
            least(sum(engaged_seconds), {{ var('max_engaged_seconds_per_view') }}) as view_seconds
        from engagement
        where user_id is not null
            and product_id is not null
            and event_at >= {{ dbt.dateadd('hour', -1 * var('browse_window_hours'), now_utc()) }}
            and event_at <= {{ now_utc() }}
        group by user_id, product_id, page_view_id
    ) as page_views
    group by user_id, product_id
),

abandoned as (
    -- viewed often enough (or read long enough), quiet since, never added after browsing
    -- began nor bought in the window; the product read longest first, then the one viewed most
    select
        window_interactions.*,
        coalesce(product_reads.engaged_seconds, 0) as engaged_seconds,
        row_number() over (
            partition by window_interactions.user_id
            order by
                coalesce(product_reads.engaged_seconds, 0) desc,
                window_interactions.view_count desc,
                window_interactions.last_viewed_at desc,
                window_interactions.product_id asc
        ) as product_rank
    from window_interactions
    left join product_reads
        on window_interactions.user_id = product_reads.user_id
        and window_interactions.product_id = product_reads.product_id
    where
        (
            window_interactions.view_count >= {{ var('browse_min_views') }}
            or coalesce(product_reads.engaged_seconds, 0) >= {{ var('browse_read_seconds') }}
        )
        and window_interactions.last_viewed_at <= {{ dbt.dateadd(
            'minute', -1 * var('browse_abandon_minutes'), now_utc()
        ) }}
        and (
            window_interactions.last_added_at is null
            or window_interactions.last_added_at < window_interactions.first_viewed_at
        )
),

top_product as (
    select * from abandoned
    where product_rank = 1
),

last_search as (
    select
        searches.user_id,
        searches.search_term,
        row_number() over (
            partition by searches.user_id
            order by searches.searched_at desc, searches.message_id desc
        ) as search_rank
    from searches
    inner join top_product
        on searches.user_id = top_product.user_id
    where searches.searched_at
        >= {{ dbt.dateadd('hour', -1 * var('browse_window_hours'), now_utc()) }}
        and searches.searched_at <= top_product.last_viewed_at
),

viewed_lists as (
    select
        user_id,
        {{ json_array_agg(product_merge_var('top_product'), 'top_product.product_id') }} as products
    from top_product
    group by user_id
),

candidates as (
    -- similar items: viewed or bought together with the product they kept looking at
    select
        top_product.user_id,
        similarity.related_product_id as product_id,
        similarity.similarity as score
    from top_product
    inner join similarity
        on top_product.product_id = similarity.product_id

    union all

    -- the fallback, always below any similar item: the bestsellers of its category, then of
    -- the whole shop
    select
        top_product.user_id,
        bestsellers.product_id,
        -1.0 * case
            when bestsellers.category = top_product.category then bestsellers.category_rank
            else 1000 + bestsellers.overall_rank
        end as score
    from top_product
    inner join bestsellers
        on top_product.category = bestsellers.category
        or bestsellers.overall_rank <= {{ var('recommendations_per_user') }}
),

ranked_recommendations as (
    select
        best.user_id,
        best.score,
        products.*,
        row_number() over (
            partition by best.user_id order by best.score desc, best.product_id asc
        ) as recommendation_rank
    from (
        select
            user_id,
            product_id,
            max(score) as score
        from candidates
        group by user_id, product_id
    ) as best
    inner join products
        on best.product_id = products.product_id
    inner join top_product
        on best.user_id = top_product.user_id
    where best.product_id <> top_product.product_id
),

recommendation_lists as (
    select
        user_id,
        {{ json_array_agg(
            product_merge_var('ranked_recommendations'),
            'ranked_recommendations.recommendation_rank'
        ) }} as recommendation_items
    from ranked_recommendations
    where recommendation_rank <= {{ var('recommendations_per_user') }}
    group by user_id
),

final as (
    select
        {{ trigger_id([
            "'browse_abandonment'",
            'top_product.user_id',
            'top_product.product_id',
            'top_product.last_viewed_at',
        ]) }} as trigger_id,
        'browse_abandonment' as campaign,
        top_product.user_id,
        top_product.first_viewed_at as situation_at,
        top_product.last_view_received_at as received_at,
        {{ dbt.dateadd('minute', var('browse_abandon_minutes'), 'top_product.last_viewed_at') }}
            as eligible_at,
        {{ dbt.dateadd(
            'hour',
            var('browse_abandon_expire_hours'),
            dbt.dateadd('minute', var('browse_abandon_minutes'), 'top_product.last_viewed_at')
        ) }} as expires_at,
        {{ json_object([
            ('products', 'viewed_lists.products'),
            ('currency', 'top_product.currency'),
            ('search_term', 'last_search.search_term'),
            ('view_count', 'top_product.view_count'),
            ('recommendations', 'coalesce(recommendation_lists.recommendation_items, ' ~ json_empty_array() ~ ')'),
        ]) }} as payload
    from top_product
    inner join viewed_lists
        on top_product.user_id = viewed_lists.user_id
    left join last_search
        on top_product.user_id = last_search.user_id
        and last_search.search_rank = 1
    left join recommendation_lists
        on top_product.user_id = recommendation_lists.user_id
)

select * from final

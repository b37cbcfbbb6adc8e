-- Search abandonment: a shopper searched, looked at what came back, and added nothing. The
-- email repeats the search and shows the results they opened, with the category's
-- bestsellers. A shopper who dwelt on one product (viewed it `browse_min_views` times, or read
-- it `browse_read_seconds`) gets browse abandonment instead, which also carries the search
-- term: this rule is for searches that found nothing to hold on to.

with

searches as (
    select * from {{ ref('int_searches') }}
),

-- read twice below, so Postgres would materialize the whole table and join it blindly to
-- the searchers; inlined, each reader finds their rows by the user_id index (docs/bench.md)
interactions as {{ cte_hint('not materialized') }} (
    select * from {{ ref('int_product_interactions') }}
),

engagement as (
    select * from {{ ref('int_product_engagement') }}
),

bestsellers as (
    select * from {{ nightly_ref('int_bestsellers') }}
),

products as (
    select * from {{ nightly_ref('int_products') }}
),

last_search as (
    -- each user's latest search in the window
    select *
    from (
        select
            user_id,
            search_term,
            searched_at,
            received_at,
            row_number() over (
                partition by user_id order by searched_at desc, message_id desc
            ) as search_rank
        from searches
        where user_id is not null
            and searched_at >= {{ dbt.dateadd(
                'hour', -1 * var('search_window_hours'), now_utc()
            ) }}
            and searched_at <= {{ now_utc() }}
    ) as ranked
    where search_rank = 1
),

after_search as (
    -- what the shopper did from the search on: the results they opened, and any add or order
    select
        interactions.user_id,
        interactions.product_id,
        interactions.interaction_type,
        interactions.event_at,
        interactions.received_at,
        interactions.product_name,
        interactions.brand,
        interactions.category,
        interactions.product_url,
        interactions.image_url,
        interactions.price,
        interactions.currency,
        interactions.message_id
    from interactions
    inner join last_search
        on interactions.user_id = last_search.user_id
    where interactions.interaction_type in ('view', 'add', 'purchase')
        -- the window as a constant first: the scan skips older events before the join
        and interactions.event_at >= {{ dbt.dateadd(
            'hour', -1 * var('search_window_hours'), now_utc()
        ) }}
        and interactions.event_at >= last_search.searched_at
        and interactions.event_at <= {{ now_utc() }}
),

window_views as (
    -- views per product in the browse window: a product viewed often is browse abandonment's
    select
        user_id,
        product_id,
        count(*) as view_count
    from interactions
    where interaction_type = 'view'
        and user_id in (select last_search.user_id from last_search)
        and event_at >= {{ dbt.dateadd('hour', -1 * var('browse_window_hours'), now_utc()) }}
        and event_at <= {{ now_utc() }}
    group by user_id, product_id
),

product_reads as (
    -- engaged seconds per product in the browse window, each page view counted up to
    -- `max_engaged_seconds_per_view` (as browse abandonment counts them)
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
        where user_id in (select last_search.user_id from last_search)
            and product_id is not null
            and event_at >= {{ dbt.dateadd('hour', -1 * var('browse_window_hours'), now_utc()) }}
            and event_at <= {{ now_utc() }}
        group by user_id, product_id, page_view_id
    ) as page_views
    group by user_id, product_id
),

dwelt as (
    -- shoppers browse abandonment is for
    select user_id from window_views
    where view_count >= {{ var('browse_min_views') }}
    union
    select user_id from product_reads
    where engaged_seconds >= {{ var('browse_read_seconds') }}
),

abandoned as (
    -- opened at least one result, added and bought nothing since the search, quiet since
    select
        last_search.user_id,
        last_search.search_term,
        last_search.searched_at,
        max(after_search.event_at) as last_active_at,
        max(case
            when after_search.received_at > last_search.received_at then after_search.received_at
            else last_search.received_at
        end) as last_received_at
    from last_search
    inner join after_search
        on last_search.user_id = after_search.user_id
    where
        not exists (
            select 1 from dwelt
            where dwelt.user_id = last_search.user_id
        )
    group by last_search.user_id, last_search.search_term, last_search.searched_at
    having sum(case when after_search.interaction_type in ('add', 'purchase') then 1 else 0 end) = 0
        and max(after_search.event_at) <= {{ dbt.dateadd(
            'minute', -1 * var('search_abandon_minutes'), now_utc()
        ) }}
),

opened_results as (
    -- the results they opened, the latest look of each, most recent first
    select *
    from (
        select
            after_search.*,
            row_number() over (
                partition by after_search.user_id, after_search.product_id
                order by after_search.event_at desc, after_search.message_id desc
            ) as look_rank
        from after_search
        inner join abandoned
            on after_search.user_id = abandoned.user_id
        where after_search.interaction_type = 'view'
    ) as looks
    where look_rank = 1
),

ranked_results as (
    select
        opened_results.*,
        row_number() over (
            partition by user_id order by event_at desc, product_id asc
        ) as result_rank
    from opened_results
),

result_lists as (
    select
        user_id,
        max(case when result_rank = 1 then category end) as category,
        coalesce(
            max(case when result_rank = 1 then currency end), '{{ var("default_currency") }}'
        ) as currency,
        {{ json_array_agg(
            product_merge_var('ranked_results'), 'ranked_results.result_rank'
        ) }} as products
    from ranked_results
    where result_rank <= {{ var('recommendations_per_user') }}
    group by user_id
),

ranked_recommendations as (
    -- the bestsellers of the category of the result opened last, then of the whole shop; never
    -- a result they already opened
    select
        result_lists.user_id,
        products.*,
        row_number() over (
            partition by result_lists.user_id
            order by
                case
                    when bestsellers.category = result_lists.category
                        then bestsellers.category_rank
                    else 1000 + bestsellers.overall_rank
                end,
                bestsellers.product_id
        ) as recommendation_rank
    from result_lists
    inner join bestsellers
        on result_lists.category = bestsellers.category
        or bestsellers.overall_rank <= {{ var('recommendations_per_user') }}
    inner join products
        on bestsellers.product_id = products.product_id
    where
        not exists (
            select 1 from opened_results
            where opened_results.user_id = result_lists.user_id
                and opened_results.product_id = bestsellers.product_id
        )
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
            "'search_abandonment'",
            'abandoned.user_id',
            'abandoned.search_term',
            'abandoned.searched_at',
        ]) }} as trigger_id,
        'search_abandonment' as campaign,
        abandoned.user_id,
        abandoned.searched_at as situation_at,
        abandoned.last_received_at as received_at,
        {{ dbt.dateadd('minute', var('search_abandon_minutes'), 'abandoned.last_active_at') }}
            as eligible_at,
        {{ dbt.dateadd(
            'hour',
            var('search_abandon_expire_hours'),
            dbt.dateadd('minute', var('search_abandon_minutes'), 'abandoned.last_active_at')
        ) }} as expires_at,
        {{ json_object([
            ('search_term', 'abandoned.search_term'),
            ('products', 'result_lists.products'),
            ('currency', 'result_lists.currency'),
            ('recommendations', 'coalesce(recommendation_lists.recommendation_items, ' ~ json_empty_array() ~ ')'),
        ]) }} as payload
    from abandoned
    inner join result_lists
        on abandoned.user_id = result_lists.user_id
    left join recommendation_lists
        on abandoned.user_id = recommendation_lists.user_id
)

select * from final

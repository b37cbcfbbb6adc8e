with

activity as (
    select * from {{ ref('int_user_activity') }}
),

recommendations as (
    select * from {{ nightly_ref('product_recommendations') }}
),

lapsed as (
    -- active before (enough sessions), silent for the configured number of days since, and
    -- not so long that the shopper has moved on: one re-engagement per silence, whenever it
    -- is first possible (a late start, an outage or a late consent does not lose it)
    select
        user_id,
        last_seen_at,
        last_received_at,
        session_count
    from activity
    where session_count >= {{ var('re_engagement_min_sessions') }}
        and last_seen_at <= {{ dbt.dateadd('day', -1 * var('re_engagement_days'), now_utc()) }}
        and last_seen_at > {{ dbt.dateadd(
            'day', -1 * var('re_engagement_horizon_days'), now_utc()
        ) }}
),

lists as (
    select
        recommendations.user_id,
        {{ json_array_agg(
            product_merge_var('recommendations'),
            'recommendations.recommendation_rank'
        ) }} as recommendation_items,
        -- prices are shown in the currency of the products (the top one's), as the shop sells
        coalesce(
            max(
                case when recommendations.recommendation_rank = 1 then recommendations.currency end
            ),
            '{{ var("default_currency") }}'
        ) as currency
    from recommendations
    inner join lapsed
        on recommendations.user_id = lapsed.user_id
    group by recommendations.user_id
),

final as (
    select
        {{ trigger_id(["'re_engagement'", 'lapsed.user_id', 'lapsed.last_seen_at']) }}
            as trigger_id,
        're_engagement' as campaign,
        lapsed.user_id,
        lapsed.last_seen_at as situation_at,
        lapsed.last_received_at as received_at,
        {{ dbt.dateadd('day', var('re_engagement_days'), 'lapsed.last_seen_at') }} as eligible_at,
        {{ dbt.dateadd('day', var('re_engagement_horizon_days'), 'lapsed.last_seen_at') }}
            as expires_at,
        {{ json_object([
            ('recommendations', 'coalesce(lists.recommendation_items, ' ~ json_empty_array() ~ ')'),
            ('last_seen_at', 'cast(lapsed.last_seen_at as ' ~ dbt.type_string() ~ ')'),
            ('currency', "coalesce(lists.currency, '" ~ var('default_currency') ~ "')"),
        ]) }} as payload
    from lapsed
    left join lists
        on lapsed.user_id = lists.user_id
)

select * from final

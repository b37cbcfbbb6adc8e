with

activity as (
    select * from {{ ref('int_user_activity') }}
),

recommendations as (
    select * from {{ nightly_ref('product_recommendations') }}
),

this_week as (
    -- one recommendations email per user per ISO week (Monday 00:00 UTC)
    select {{ dbt.date_trunc('week', now_utc()) }} as week_start
),

active_users as (
    -- browsing lately but not buying lately: the audience for "you might like"
    select
        activity.user_id,
        activity.last_seen_at
    from activity
    where activity.last_seen_at
        >= {{ dbt.dateadd('day', -1 * var('recommendation_active_days'), now_utc()) }}
        and (
            activity.last_order_at is null
            or activity.last_order_at < {{ dbt.dateadd(
                'day', -1 * var('recommendation_active_days'), now_utc()
            ) }}
        )
),

lists as (
    select
        recommendations.user_id,
        count(*) as item_count,
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
    inner join active_users
        on recommendations.user_id = active_users.user_id
    group by recommendations.user_id
),

final as (
    select
        {{ trigger_id(["'product_recommendations'", 'lists.user_id', 'this_week.week_start']) }}
            as trigger_id,
        'product_recommendations' as campaign,
        lists.user_id,
        cast(this_week.week_start as {{ dbt.type_timestamp() }}) as situation_at,
        -- a weekly email rests on no single event: it is due when its week starts
        cast(null as {{ dbt.type_timestamp() }}) as received_at,
        cast(this_week.week_start as {{ dbt.type_timestamp() }}) as eligible_at,
        {{ dbt.dateadd(
            'hour',
            var('recommendation_expire_hours'),
            'cast(this_week.week_start as ' ~ dbt.type_timestamp() ~ ')',
        ) }} as expires_at,
        {{ json_object([
            ('recommendations', 'lists.recommendation_items'),
            ('currency', "lists.currency"),
        ]) }} as payload
    from lists
    cross join this_week
    where lists.item_count >= {{ var('recommendation_min_items') }}
)

select * from final

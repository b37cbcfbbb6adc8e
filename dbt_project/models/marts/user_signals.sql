{%- set weights = var('intent_weights') -%}

with

profiles as (
    select * from {{ ref('int_user_profiles') }}
),

activity as (
    select * from {{ ref('int_user_activity') }}
),

interactions as (
    select * from {{ ref('int_product_interactions') }}
),

searches as (
    select * from {{ ref('int_searches') }}
),

carts as (
    select * from {{ ref('int_carts') }}
),

email_engagement_events as (
    select * from {{ ref('stg_rudderstack__email_events') }}
),

population_timezone as (
    -- the most common known time zone stands in for users who never told us theirs
    select coalesce(max(timezone), '{{ var("default_timezone") }}') as timezone
    from (
        select
            timezone,
            row_number() over (order by count(*) desc, timezone) as timezone_rank
        from profiles
        where timezone is not null
        group by timezone
    ) as ranked
    where timezone_rank = 1
),

users as (
    select
        activity.user_id,
        profiles.email,
        profiles.first_name,
        profiles.locale,
        coalesce(profiles.timezone, population_timezone.timezone) as timezone,
        profiles.timezone is null as is_timezone_assumed,
        coalesce(profiles.has_email_consent, false) as has_email_consent,
        activity.first_seen_at,
        activity.last_seen_at,
        activity.session_count,
        activity.order_count,
        activity.lifetime_revenue,
        activity.last_order_at
    from activity
    left join profiles
        on activity.user_id = profiles.user_id
    cross join population_timezone
),

weighted_signals as (
    -- behaviour inside the signal window and after the user's last order: buying resets intent
    select
        interactions.user_id,
        interactions.category,
        interactions.brand,
        case interactions.interaction_type
            {%- for kind, weight in weights.items() %}
            when '{{ kind }}' then {{ weight }}
            {%- endfor %}
            else 0
        end as weight,
        interactions.event_at
    from interactions
    inner join users
        on interactions.user_id = users.user_id
    where interactions.event_at >= {{ dbt.dateadd('day', -1 * var('signal_window_days'), now_utc()) }}
        and interactions.event_at <= {{ now_utc() }}
        and (users.last_order_at is null or interactions.event_at > users.last_order_at)
    union all
    select
        searches.user_id,
        cast(null as {{ dbt.type_string() }}) as category,
        cast(null as {{ dbt.type_string() }}) as brand,
        {{ weights.get('search', 1) }} as weight,
        searches.searched_at as event_at
    from searches
    inner join users
        on searches.user_id = users.user_id
    where searches.searched_at >= {{ dbt.dateadd('day', -1 * var('signal_window_days'), now_utc()) }}
        and searches.searched_at <= {{ now_utc() }}
        and (users.last_order_at is null or searches.searched_at > users.last_order_at)
),

decayed as (
    -- weight halves every intent_half_life_hours: exp(-ln 2 * age / half-life)
    select
        user_id,
        category,
        brand,
        weight * exp(
            -0.693147180559945
            * ({{ epoch_seconds(now_utc()) }} - {{ epoch_seconds('event_at') }}) / 3600.0
            / {{ var('intent_half_life_hours') }}
        ) as decayed_weight
    from weighted_signals
),

intent as (
    select
        user_id,
        round(cast(sum(decayed_weight) as numeric), 4) as intent_score
    from decayed
    group by user_id
),

category_weights as (
    select
        user_id,
        category,
        sum(decayed_weight) as category_weight,
        sum(sum(decayed_weight)) over (partition by user_id) as total_weight,
        row_number() over (
            partition by user_id order by sum(decayed_weight) desc, category
        ) as category_rank
    from decayed
    where category is not null and decayed_weight > 0
    group by user_id, category
),

brand_weights as (
    select
        user_id,
        brand,
        sum(decayed_weight) as brand_weight,
        sum(sum(decayed_weight)) over (partition by user_id) as total_weight,
        row_number() over (
            partition by user_id order by sum(decayed_weight) desc, brand
        ) as brand_rank
    from decayed
    where brand is not null and decayed_weight > 0
    group by user_id, brand
),

engagement_hours as (
    -- opens and clicks, in the user's own local hour
    select
        email_engagement_events.user_id,
        extract(hour from {{ utc_to_local('email_engagement_events.event_at', 'users.timezone') }})
            as local_hour
    from email_engagement_events
    inner join users
        on email_engagement_events.user_id = users.user_id
    where email_engagement_events.email_event_type in ('opened', 'clicked')
),

user_send_hours as (
    select
        user_id,
        local_hour,
        sum(count(*)) over (partition by user_id) as engagement_count,
        row_number() over (
            partition by user_id order by count(*) desc, local_hour
        ) as hour_rank
    from engagement_hours
    group by user_id, local_hour
),

population_send_hour as (
    select coalesce(max(local_hour), {{ var('default_send_hour') }}) as local_hour
    from (
        select
            local_hour,
            row_number() over (order by count(*) desc, local_hour) as hour_rank
        from engagement_hours
        group by local_hour
    ) as ranked
    where hour_rank = 1
),

open_carts as (
    select distinct user_id
    from carts
    where item_count > 0
        and not is_converted
        and last_activity_at >= {{ dbt.dateadd('day', -1 * var('signal_window_days'), now_utc()) }}
),

final as (
    select
        users.user_id,
        users.email,
        users.first_name,
        users.locale,
        users.timezone,
        users.is_timezone_assumed,
        users.has_email_consent,
        users.first_seen_at,
        users.last_seen_at,
        cast(floor(
            ({{ epoch_seconds(now_utc()) }} - {{ epoch_seconds('users.last_seen_at') }}) / 86400.0
        ) as {{ dbt.type_int() }}) as inactivity_days,
        users.session_count,
        users.order_count as lifetime_orders,
        users.lifetime_revenue,
        users.last_order_at,
        coalesce(intent.intent_score, 0) as intent_score,
        case
            when open_carts.user_id is not null then 'cart'
            when coalesce(intent.intent_score, 0) >= {{ var('intent_stage_thresholds')['high'] }}
                then 'high_intent'
            when coalesce(intent.intent_score, 0) >= {{ var('intent_stage_thresholds')['medium'] }}
                then 'considering'
            when users.last_seen_at
                <= {{ dbt.dateadd('day', -1 * var('re_engagement_days'), now_utc()) }}
                then 'dormant'
            when coalesce(intent.intent_score, 0) > 0 then 'browsing'
            when users.order_count > 0 then 'customer'
            else 'inactive'
        end as intent_stage,
        category_weights.category as top_category,
        round(cast(category_weights.category_weight / category_weights.total_weight as numeric), 4)
            as category_affinity,
        brand_weights.brand as top_brand,
        round(cast(brand_weights.brand_weight / brand_weights.total_weight as numeric), 4)
            as brand_affinity,
        cast(case
            when user_send_hours.engagement_count >= {{ var('min_engagements_for_send_hour') }}
                then user_send_hours.local_hour
            else population_send_hour.local_hour
        end as {{ dbt.type_int() }}) as best_send_hour_local,
        case
            when user_send_hours.engagement_count >= {{ var('min_engagements_for_send_hour') }}
                then 'user'
            else 'population'
        end as send_hour_source,
        {{ now_utc() }} as computed_at
    from users
    cross join population_send_hour
    left join intent
        on users.user_id = intent.user_id
    left join open_carts
        on users.user_id = open_carts.user_id
    left join category_weights
        on users.user_id = category_weights.user_id
        and category_weights.category_rank = 1
    left join brand_weights
        on users.user_id = brand_weights.user_id
        and brand_weights.brand_rank = 1
    left join user_send_hours
        on users.user_id = user_send_hours.user_id
        and user_send_hours.hour_rank = 1
)

select * from final

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

send_preferences as (
    select * from {{ ref('int_user_send_preferences') }}
),

purchase_scores as (
    select * from {{ ref('stg_signalmail__purchase_scores') }}
),

engagement as (
    select * from {{ ref('int_product_engagement') }}
),

users as (
    select
        activity.user_id,
        profiles.email,
        profiles.first_name,
        profiles.locale,
        send_preferences.timezone,
        send_preferences.is_timezone_assumed,
        send_preferences.best_send_hour_local,
        send_preferences.send_hour_source,
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
    left join send_preferences
        on activity.user_id = send_preferences.user_id
),

page_reads as (
    -- time on content in the signal window: engaged seconds per page view, capped
    select
        user_id,
        page_view_id,
        max(product_id) as product_id,
        max(category) as category,
        least(sum(engaged_seconds), {{ var('max_engaged_seconds_per_view') }}) as engaged_seconds,
        max(event_at) as event_at
    from engagement
    where user_id is not null
        and event_at >= {{ dbt.dateadd('day', -1 * var('signal_window_days'), now_utc()) }}
        and event_at <= {{ now_utc() }}
    group by user_id, page_view_id
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
    where interactions.event_at
        >= {{ dbt.dateadd('day', -1 * var('signal_window_days'), now_utc()) }}
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
    where searches.searched_at
        >= {{ dbt.dateadd('day', -1 * var('signal_window_days'), now_utc()) }}
        and searches.searched_at <= {{ now_utc() }}
        and (users.last_order_at is null or searches.searched_at > users.last_order_at)
    union all
    -- a read counts per engaged minute on top of its view: a 90-second read well above a
    -- 3-second bounce
    select
        page_reads.user_id,
        page_reads.category,
        cast(null as {{ dbt.type_string() }}) as brand,
        {{ weights.get('read', 0) }} * page_reads.engaged_seconds / 60.0 as weight,
        page_reads.event_at
    from page_reads
    inner join users
        on page_reads.user_id = users.user_id
    where users.last_order_at is null or page_reads.event_at > users.last_order_at
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
        {{ rounded('sum(decayed_weight)', 4) }} as intent_score
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

read_totals as (
    select
        user_id,
        sum(engaged_seconds) as engaged_seconds
    from page_reads
    group by user_id
),

category_reads as (
    select
        user_id,
        category,
        sum(engaged_seconds) as engaged_seconds,
        row_number() over (
            partition by user_id order by sum(engaged_seconds) desc, category
        ) as read_rank
    from page_reads
    where category is not null
    group by user_id, category
),

product_reads as (
    select
        user_id,
        product_id,
        sum(engaged_seconds) as engaged_seconds,
        row_number() over (
            partition by user_id order by sum(engaged_seconds) desc, product_id
        ) as read_rank
    from page_reads
    where product_id is not null
    group by user_id, product_id
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
        purchase_scores.purchase_probability,
        purchase_scores.model_version as purchase_model_version,
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
        {{ rounded('category_weights.category_weight / category_weights.total_weight', 4) }}
            as category_affinity,
        brand_weights.brand as top_brand,
        {{ rounded('brand_weights.brand_weight / brand_weights.total_weight', 4) }}
            as brand_affinity,
        {{ rounded('coalesce(read_totals.engaged_seconds, 0)', 1) }} as engaged_seconds,
        category_reads.category as most_read_category,
        {{ rounded('category_reads.engaged_seconds', 1) }} as most_read_category_seconds,
        product_reads.product_id as most_read_product_id,
        {{ rounded('product_reads.engaged_seconds', 1) }} as most_read_product_seconds,
        users.best_send_hour_local,
        users.send_hour_source,
        {{ now_utc() }} as computed_at
    from users
    left join intent
        on users.user_id = intent.user_id
    left join open_carts
        on users.user_id = open_carts.user_id
    left join purchase_scores
        on users.user_id = purchase_scores.user_id
    left join read_totals
        on users.user_id = read_totals.user_id
    left join category_reads
        on users.user_id = category_reads.user_id
        and category_reads.read_rank = 1
    left join product_reads
        on users.user_id = product_reads.user_id
        and product_reads.read_rank = 1
    left join category_weights
        on users.user_id = category_weights.user_id
        and category_weights.category_rank = 1
    left join brand_weights
        on users.user_id = brand_weights.user_id
        and brand_weights.brand_rank = 1
)

select * from final

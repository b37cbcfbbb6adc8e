{{ config(materialized='table', tags=['nightly']) }}
{%- set weights = var('intent_weights') -%}
{%- set horizon = var('purchase_horizon_days') | int -%}
{%- set window = var('purchase_feature_window_days') | int -%}
{%- set signal_window = var('signal_window_days') | int -%}
{%- set reach = [window, signal_window] | max -%}

-- What we knew about each shopper at a moment (`as_of`) and whether they ordered in the
-- `purchase_horizon_days` after it: the rows the purchase-propensity model learns from and
-- scores (signalmail intent train, docs/signals.md "Predicted intent").
--
-- One snapshot a day for the last `purchase_training_days` days, each at this build's time of
-- day; the newest (days_back = 0, as_of = now) is the one the model scores. A shopper is in a
-- snapshot when they had identified and had a session in the `purchase_feature_window_days`
-- before it. Every feature reads only what happened before `as_of`, so training never sees
-- the future (one exception, documented in docs/signals.md: a second device linked to a
-- shopper after as_of brings its earlier sessions with it).

with

interactions as (
    select * from {{ ref('int_product_interactions') }}
),

searches as (
    select * from {{ ref('int_searches') }}
),

sessions as (
    select * from {{ ref('int_sessions') }}
),

orders as (
    select * from {{ ref('int_orders') }}
),

email_events as (
    select * from {{ ref('stg_rudderstack__email_events') }}
),

identity_map as (
    select * from {{ ref('int_identity_map') }}
),

engagement as (
    select * from {{ ref('int_product_engagement') }}
),

known_since as (
    -- a shopper joins the snapshots once they have identified: otherwise an identify at
    -- checkout would put an anonymous browser into the snapshots before it only because it
    -- went on to order
    select
        user_id,
        min(identified_at) as identified_at
    from identity_map
    group by user_id
),

snapshots as (
    {%- for days_back in range(var('purchase_training_days') | int + 1) %}
    select
        {{ days_back }} as days_back,
        {{ dbt.dateadd('day', -1 * days_back, now_utc()) }} as as_of
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
),

population as (
    -- who was around: a session in the feature window before the snapshot
    select
        snapshots.days_back,
        snapshots.as_of,
        sessions.user_id,
        count(*) as sessions_window,
        sum(case
            when sessions.started_at >= {{ dbt.dateadd('day', -7, 'snapshots.as_of') }} then 1
            else 0
        end) as sessions_7d,
        -- a session still running at as_of counts up to as_of only
        sum(case
            when sessions.started_at >= {{ dbt.dateadd('day', -7, 'snapshots.as_of') }}
                then {{ epoch_seconds(
                    'case when sessions.ended_at < snapshots.as_of'
                    ~ ' then sessions.ended_at else snapshots.as_of end'
                ) }}
                    - {{ epoch_seconds('sessions.started_at') }}
            else 0
        end) / 60.0 as engaged_minutes_7d,
        max(sessions.started_at) as last_session_at
    from snapshots
    inner join sessions
        on snapshots.as_of > sessions.started_at
        and sessions.started_at >= {{ dbt.dateadd('day', -1 * window, 'snapshots.as_of') }}
    left join known_since
        on sessions.user_id = known_since.user_id
    where sessions.user_id is not null
        and (known_since.identified_at is null or known_since.identified_at < snapshots.as_of)
    group by snapshots.days_back, snapshots.as_of, sessions.user_id
),

tenure as (
    -- all sessions before the snapshot: a shopper's visit rate is their strongest trait
    select
        population.days_back,
        population.user_id,
        count(*) as sessions_before,
        min(sessions.started_at) as first_session_at
    from population
    inner join sessions
        on population.user_id = sessions.user_id
        and population.as_of > sessions.started_at
    group by population.days_back, population.user_id
),

orders_before as (
    select
        population.days_back,
        population.user_id,
        count(orders.order_id) as orders_before,
        coalesce(sum(orders.revenue), 0) as revenue_before,
        max(orders.ordered_at) as last_order_at
    from population
    inner join orders
        on population.user_id = orders.user_id
        and population.as_of > orders.ordered_at
    group by population.days_back, population.user_id
),

signals as (
    -- every weighted behaviour, as user_signals weighs it for intent_score
    select
        user_id,
        interaction_type as signal_type,
        event_at
    from interactions
    where user_id is not null
    union all
    select
        user_id,
        'search' as signal_type,
        searched_at as event_at
    from searches
    where user_id is not null
),

behaviour as (
    select
        population.days_back,
        population.user_id,
        sum(case when signals.signal_type = 'view' then 1 else 0 end) as views_window,
        sum(case
            when signals.signal_type = 'view'
                and signals.event_at >= {{ dbt.dateadd('day', -7, 'population.as_of') }} then 1
            else 0
        end) as views_7d,
        sum(case when signals.signal_type = 'add' then 1 else 0 end) as adds_window,
        sum(case
            when signals.signal_type = 'add'
                and signals.event_at >= {{ dbt.dateadd('day', -7, 'population.as_of') }} then 1
            else 0
        end) as adds_7d,
        sum(case
            when signals.signal_type = 'add'
                and (
                    orders_before.last_order_at is null
                    or signals.event_at > orders_before.last_order_at
                ) then 1
            else 0
        end) as adds_since_last_order,
        max(case when signals.signal_type = 'add' then signals.event_at end) as last_add_at,
        sum(case
            when signals.signal_type = 'cart_view'
                and signals.event_at >= {{ dbt.dateadd('day', -7, 'population.as_of') }} then 1
            else 0
        end) as cart_views_7d,
        sum(case
            when signals.signal_type = 'checkout'
                and signals.event_at >= {{ dbt.dateadd('day', -7, 'population.as_of') }} then 1
            else 0
        end) as checkouts_7d,
        sum(case
            when signals.signal_type = 'search'
                and signals.event_at >= {{ dbt.dateadd('day', -7, 'population.as_of') }} then 1
            else 0
        end) as searches_7d,
        -- the baseline: user_signals.intent_score as it read at as_of
        sum(case
            when signals.event_at
                >= {{ dbt.dateadd('day', -1 * signal_window, 'population.as_of') }}
                and (
                    orders_before.last_order_at is null
                    or signals.event_at > orders_before.last_order_at
                )
                then
                    case signals.signal_type
                        {%- for kind, weight in weights.items() %}
                        when '{{ kind }}' then {{ weight }}
                        {%- endfor %}
                        else 0
                    end
                    * exp(
                        -0.693147180559945
                        * (
                            {{ epoch_seconds('population.as_of') }}
                            - {{ epoch_seconds('signals.event_at') }}
                        )
                        / 3600.0 / {{ var('intent_half_life_hours') }}
                    )
            else 0
        end) as intent_score
    from population
    inner join signals
        on population.user_id = signals.user_id
        and population.as_of > signals.event_at
        and signals.event_at >= {{ dbt.dateadd('day', -1 * reach, 'population.as_of') }}
    left join orders_before
        on population.days_back = orders_before.days_back
        and population.user_id = orders_before.user_id
    group by population.days_back, population.user_id
),

email_engagement as (
    select
        population.days_back,
        population.user_id,
        sum(case when email_events.email_event_type = 'opened' then 1 else 0 end)
            as email_opens_window,
        sum(case when email_events.email_event_type = 'clicked' then 1 else 0 end)
            as email_clicks_window
    from population
    inner join email_events
        on population.user_id = email_events.user_id
        and population.as_of > email_events.event_at
        and email_events.event_at >= {{ dbt.dateadd('day', -1 * window, 'population.as_of') }}
    group by population.days_back, population.user_id
),

reading as (
    -- time on content: engaged seconds in the 7 days before the snapshot
    select
        population.days_back,
        population.user_id,
        sum(engagement.engaged_seconds) as read_seconds_7d
    from population
    inner join engagement
        on population.user_id = engagement.user_id
        and population.as_of > engagement.event_at
        and engagement.event_at >= {{ dbt.dateadd('day', -7, 'population.as_of') }}
    group by population.days_back, population.user_id
),

labels as (
    -- an order in the horizon after the snapshot
    select distinct
        population.days_back,
        population.user_id
    from population
    inner join orders
        on population.user_id = orders.user_id
        and population.as_of <= orders.ordered_at
        and orders.ordered_at < {{ dbt.dateadd('day', horizon, 'population.as_of') }}
),

final as (
    select
        population.days_back,
        population.as_of,
        population.user_id,
        population.sessions_7d,
        population.sessions_window,
        {{ rounded('population.engaged_minutes_7d', 2) }} as engaged_minutes_7d,
        {{ rounded('coalesce(reading.read_seconds_7d, 0)', 1) }} as read_seconds_7d,
        (
            {{ epoch_seconds('population.as_of') }}
            - {{ epoch_seconds('population.last_session_at') }}
        ) / 86400.0 as days_since_last_session,
        tenure.sessions_before,
        (
            {{ epoch_seconds('population.as_of') }}
            - {{ epoch_seconds('tenure.first_session_at') }}
        ) / 86400.0 as days_since_first_session,
        coalesce(behaviour.views_7d, 0) as views_7d,
        coalesce(behaviour.views_window, 0) as views_window,
        coalesce(behaviour.adds_7d, 0) as adds_7d,
        coalesce(behaviour.adds_window, 0) as adds_window,
        coalesce(behaviour.adds_since_last_order, 0) as adds_since_last_order,
        (
            {{ epoch_seconds('population.as_of') }}
            - {{ epoch_seconds('behaviour.last_add_at') }}
        ) / 86400.0 as days_since_last_add,
        coalesce(behaviour.cart_views_7d, 0) as cart_views_7d,
        coalesce(behaviour.checkouts_7d, 0) as checkouts_7d,
        coalesce(behaviour.searches_7d, 0) as searches_7d,
        coalesce(email_engagement.email_opens_window, 0) as email_opens_window,
        coalesce(email_engagement.email_clicks_window, 0) as email_clicks_window,
        coalesce(orders_before.orders_before, 0) as orders_before,
        -- rounded: a float sum's last digits depend on the order rows arrive in
        {{ rounded('coalesce(orders_before.revenue_before, 0)', 2) }} as revenue_before,
        (
            {{ epoch_seconds('population.as_of') }}
            - {{ epoch_seconds('orders_before.last_order_at') }}
        ) / 86400.0 as days_since_last_order,
        {{ rounded('coalesce(behaviour.intent_score, 0)', 4) }} as intent_score,
        -- the horizon after a snapshot must have passed before its label is known
        population.days_back >= {{ horizon }} as is_label_known,
        case
            when population.days_back < {{ horizon }} then null
            when labels.user_id is not null then 1
            else 0
        end as ordered_in_horizon
    from population
    inner join tenure
        on population.days_back = tenure.days_back
        and population.user_id = tenure.user_id
    left join behaviour
        on population.days_back = behaviour.days_back
        and population.user_id = behaviour.user_id
    left join reading
        on population.days_back = reading.days_back
        and population.user_id = reading.user_id
    left join email_engagement
        on population.days_back = email_engagement.days_back
        and population.user_id = email_engagement.user_id
    left join orders_before
        on population.days_back = orders_before.days_back
        and population.user_id = orders_before.user_id
    left join labels
        on population.days_back = labels.days_back
        and population.user_id = labels.user_id
)

select * from final

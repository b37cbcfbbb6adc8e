{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='user_id',
        indexes=postgres_indexes([['user_id'], ['last_received_at']]),
    )
}}

-- touched_users() reads these on incremental runs:
-- depends_on: {{ ref('int_events') }}
-- depends_on: {{ ref('int_identity_map') }}

with

sessions as (
    select * from {{ ref('int_sessions') }}
),

orders as (
    select * from {{ ref('int_orders') }}
),

-- what a run reads: a tick, the touched users' sessions and orders; a full build, all of them
{% if is_incremental() %}
touched as {{ cte_hint('materialized') }} (
    {{ touched_users(incremental_cutoff('last_received_at')) }}
),

sessions_read as (
    select * from sessions
    where user_id in (select user_id from touched)
),

orders_read as (
    select * from orders
    where user_id in (select user_id from touched)
),

{% else %}

sessions_read as (
    select * from sessions
),

orders_read as (
    select * from orders
    where user_id is not null
),
{% endif %}

session_totals as (
    -- sessions partition a user's events, so their totals are the events' totals (a
    -- fraction of the rows to read)
    select
        user_id,
        min(started_at) as first_seen_at,
        max(ended_at) as last_seen_at,
        sum(event_count) as event_count,
        count(*) as session_count,
        max(last_received_at) as last_received_at
    from sessions_read
    group by user_id
),

order_totals as (
    select
        user_id,
        count(*) as order_count,
        sum(revenue) as lifetime_revenue,
        min(ordered_at) as first_order_at,
        max(ordered_at) as last_order_at
    from orders_read
    group by user_id
),

final as (
    select
        session_totals.user_id,
        session_totals.first_seen_at,
        session_totals.last_seen_at,
        session_totals.event_count,
        session_totals.session_count,
        coalesce(order_totals.order_count, 0) as order_count,
        coalesce(order_totals.lifetime_revenue, 0) as lifetime_revenue,
        order_totals.first_order_at,
        order_totals.last_order_at,
        session_totals.last_received_at
    from session_totals
    left join order_totals
        on session_totals.user_id = order_totals.user_id
)

select * from final

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='order_id',
        indexes=postgres_indexes([['order_id'], ['received_at'], ['user_id'], ['anonymous_id']]),
    )
}}

{#-
    Incremental on order_id. A tick reads the order reports received since the mark and the
    anonymous reports whose identity link changed; each competes with the stored first report of
    its order, so an order reported again later keeps its first report and a late earlier report
    replaces it. Rebuilding the table on every tick read every order ever placed.
-#}

with

tracks as (
    select * from {{ ref('stg_rudderstack__tracks') }}
),

identity_map as (
    select * from {{ ref('int_identity_map') }}
),

completed as (
    select
        order_id,
        message_id,
        user_id,
        anonymous_id,
        cart_id,
        event_at,
        received_at,
        order_revenue,
        currency
    from tracks
    where event_name = 'Order Completed'
        and order_id is not null
),

reports as (
    {% if is_incremental() %}
    {{ received_or_restitched('completed', incremental_cutoff(), unresolved_only=true) }}
    {% else %}
    select * from completed
    {% endif %}
),

resolved as (
    select
        reports.order_id,
        reports.message_id,
        coalesce(reports.user_id, identity_map.user_id) as user_id,
        reports.anonymous_id,
        reports.cart_id,
        reports.event_at as ordered_at,
        reports.received_at,
        coalesce(reports.order_revenue, 0) as revenue,
        reports.currency,
        0 as is_stored
    from reports
    left join identity_map
        on reports.anonymous_id = identity_map.anonymous_id
),

candidates as (
    select * from resolved
    {% if is_incremental() %}
    union all
    -- the stored first report of the same orders competes (a fresh read of it wins the tie)
    select
        order_id,
        message_id,
        user_id,
        anonymous_id,
        cart_id,
        ordered_at,
        received_at,
        revenue,
        currency,
        1 as is_stored
    from {{ this }}
    where order_id in (select order_id from resolved)
    {% endif %}
),

ranked as (
    -- the same order reported twice (two message ids) counts once: the first report
    select
        *,
        row_number() over (
            partition by order_id order by ordered_at, message_id, is_stored
        ) as report_number
    from candidates
),

final as (
    select
        order_id,
        message_id,
        user_id,
        anonymous_id,
        cart_id,
        ordered_at,
        received_at,
        revenue,
        currency
    from ranked
    where report_number = 1
)

select * from final

with

tracks as (
    select * from {{ ref('stg_rudderstack__tracks') }}
),

identity_map as (
    select * from {{ ref('int_identity_map') }}
),

completed as (
    select
        tracks.order_id,
        tracks.message_id,
        coalesce(tracks.user_id, identity_map.user_id) as user_id,
        tracks.anonymous_id,
        tracks.cart_id,
        tracks.event_at as ordered_at,
        tracks.received_at,
        coalesce(tracks.order_revenue, 0) as revenue,
        tracks.currency,
        -- the same order reported twice (two message ids) counts once: the first report
        row_number() over (
            partition by tracks.order_id order by tracks.event_at, tracks.message_id
        ) as report_number
    from tracks
    left join identity_map
        on tracks.anonymous_id = identity_map.anonymous_id
    where tracks.event_name = 'Order Completed'
        and tracks.order_id is not null
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
    from completed
    where report_number = 1
)

select * from final

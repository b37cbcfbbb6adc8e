with

tracks as (
    select * from {{ ref('stg_rudderstack__tracks') }}
),

pages as (
    select * from {{ ref('stg_rudderstack__pages') }}
),

identifies as (
    select * from {{ ref('stg_rudderstack__identifies') }}
),

identity_map as (
    select * from {{ ref('int_identity_map') }}
),

activity as (
    -- site and app activity only: email webhook events are not the user being active
    select
        message_id,
        'track' as event_type,
        event_name,
        anonymous_id,
        user_id,
        event_at,
        received_at,
        context_timezone
    from tracks
    where event_name not in (
        'Email Sent', 'Email Delivered', 'Email Opened', 'Email Link Clicked', 'Email Bounced',
        'Email Rejected', 'Marked as Spam', 'Unsubscribed'
    )
    union all
    select
        message_id,
        'page' as event_type,
        'Page Viewed' as event_name,
        anonymous_id,
        user_id,
        event_at,
        received_at,
        context_timezone
    from pages
    union all
    select
        message_id,
        'identify' as event_type,
        'Identify' as event_name,
        anonymous_id,
        user_id,
        event_at,
        received_at,
        cast(null as {{ dbt.type_string() }}) as context_timezone
    from identifies
),

resolved as (
    select
        activity.message_id,
        activity.event_type,
        activity.event_name,
        activity.anonymous_id,
        coalesce(activity.user_id, identity_map.user_id) as user_id,
        activity.event_at,
        activity.received_at,
        activity.context_timezone
    from activity
    left join identity_map
        on activity.anonymous_id = identity_map.anonymous_id
)

select * from resolved

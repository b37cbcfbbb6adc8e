{{
    config(
        materialized='incremental',
        incremental_strategy='bounded_delete_insert',
        unique_key='message_id',
        delete_bound='received_at',
        indexes=postgres_indexes([['message_id'], ['received_at'], ['user_id'], ['anonymous_id']]),
    )
}}

{#-
    A table rather than a view so state models filter by user without re-joining the whole
    history to the identity map on every tick. Incrementally it takes the newly received rows
    plus every stored row of an anonymous id whose link changed (re-attribution).
-#}

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

activity as {{ cte_hint('not materialized') }} (
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
    where
        event_name not in (
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

changed as (
    {% if is_incremental() %}
    {{ received_or_restitched('activity', incremental_cutoff(), unresolved_only=true) }}
    {% else %}
    select * from activity
    {% endif %}
),

resolved as (
    select
        changed.message_id,
        changed.event_type,
        changed.event_name,
        changed.anonymous_id,
        coalesce(changed.user_id, identity_map.user_id) as user_id,
        changed.event_at,
        changed.received_at,
        changed.context_timezone
    from changed
    left join identity_map
        on changed.anonymous_id = identity_map.anonymous_id
)

select * from resolved
{{ full_build_order('received_at') }}

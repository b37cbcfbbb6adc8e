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

identifies as (
    select * from {{ ref('stg_rudderstack__identifies') }}
),

identity_map as (
    select * from {{ ref('int_identity_map') }}
),

sessions as (
    select * from {{ ref('int_sessions') }}
),

known_timezones as (
    select timezone_name from {{ known_timezones() }}
),

{#-
    Each trait is the latest non-null value by (event_at, message_id). A tick folds the
    identifies it reads (received since the cutoff, and older ones of anonymous ids stitched
    since) into the stored profile: per trait, whichever of the stored winner and the new one
    is later. The winner's event time and message id are stored beside the value for that
    comparison, so a tick never re-reads a user's identify history, and reading the lookback
    window again changes nothing (the later of the same two is the same). A full build folds
    every identify into no stored profile. The block at the top sets what a run reads; the SQL
    below it is the same for both.
-#}

{% if is_incremental() %}
{%- set cutoff = incremental_cutoff('last_received_at') %}
touched as {{ cte_hint('materialized') }} (
    {{ touched_users(cutoff) }}
),

identifies_read as (
    {{ received_or_restitched(
        ref('stg_rudderstack__identifies'), cutoff, unresolved_only=true
    ) | indent(4) }}
),

sessions_read as (
    select * from sessions
    where user_id in (select user_id from touched)
),

stored as (
    select * from {{ this }}
    where user_id in (select user_id from touched)
),

{% else %}

identifies_read as (
    select * from identifies
),

sessions_read as (
    select * from sessions
),

stored as (
    -- no stored profile: the winners' columns from the identifies, with no row
    select
        user_id,
        email,
        event_at as email_at,
        message_id as email_message_id,
        first_name,
        event_at as first_name_at,
        message_id as first_name_message_id,
        locale,
        event_at as locale_at,
        message_id as locale_message_id,
        timezone as declared_timezone,
        event_at as declared_timezone_at,
        message_id as declared_timezone_message_id,
        email_opt_in,
        event_at as consent_updated_at,
        message_id as email_opt_in_message_id
    from identifies
    where 1 = 0
),
{% endif %}

resolved_identifies as (
    select
        identifies_read.*,
        coalesce(identifies_read.user_id, identity_map.user_id) as resolved_user_id
    from identifies_read
    left join identity_map
        on identifies_read.anonymous_id = identity_map.anonymous_id
),

read_traits as (
    -- per trait, the latest non-null value among the identifies read, and its ordering key
    select
        resolved_user_id as user_id,
        {{ latest_value('email', 'event_at desc, message_id desc') }} as email,
        max(case when email is not null then event_at end) as email_at,
        {{ latest_value(
            'case when email is not null then message_id end',
            'event_at desc, message_id desc',
        ) }} as email_message_id,
        {{ latest_value('first_name', 'event_at desc, message_id desc') }} as first_name,
        max(case when first_name is not null then event_at end) as first_name_at,
        {{ latest_value(
            'case when first_name is not null then message_id end',
            'event_at desc, message_id desc',
        ) }} as first_name_message_id,
        {{ latest_value('locale', 'event_at desc, message_id desc') }} as locale,
        max(case when locale is not null then event_at end) as locale_at,
        {{ latest_value(
            'case when locale is not null then message_id end',
            'event_at desc, message_id desc',
        ) }} as locale_message_id,
        {{ latest_value('timezone', 'event_at desc, message_id desc') }} as declared_timezone,
        max(case when timezone is not null then event_at end) as declared_timezone_at,
        {{ latest_value(
            'case when timezone is not null then message_id end',
            'event_at desc, message_id desc',
        ) }} as declared_timezone_message_id,
        {{ latest_value('email_opt_in', 'event_at desc, message_id desc') }} as email_opt_in,
        max(case when email_opt_in is not null then event_at end) as consent_updated_at,
        {{ latest_value(
            'case when email_opt_in is not null then message_id end',
            'event_at desc, message_id desc',
        ) }} as email_opt_in_message_id
    from resolved_identifies
    where resolved_user_id is not null
    group by resolved_user_id
),

traits as (
    -- per trait, the later winner of the stored and the newly read (by event time, then
    -- message id): value, time and message id all from that side
    select
        coalesce(read_traits.user_id, stored.user_id) as user_id,
        {{ later_winner('email', 'email_at', 'email_message_id') }},
        {{ later_winner('first_name', 'first_name_at', 'first_name_message_id') }},
        {{ later_winner('locale', 'locale_at', 'locale_message_id') }},
        {{ later_winner(
            'declared_timezone', 'declared_timezone_at', 'declared_timezone_message_id'
        ) }},
        {{ later_winner('email_opt_in', 'consent_updated_at', 'email_opt_in_message_id') }}
    from read_traits
    full outer join stored
        on read_traits.user_id = stored.user_id
),

activity as (
    -- the latest context time zone of any event: each session carries its own latest, and
    -- sessions never share an instant, so the latest of those is the latest of all
    select
        user_id,
        {{ latest_value('context_timezone', 'context_timezone_at desc') }} as context_timezone,
        max(last_received_at) as last_received_at
    from sessions_read
    group by user_id
),

joined as (
    select
        activity.user_id,
        traits.email,
        traits.first_name,
        traits.locale,
        traits.declared_timezone,
        activity.context_timezone,
        coalesce(traits.email_opt_in, false) as has_email_consent,
        traits.consent_updated_at,
        activity.last_received_at,
        traits.email_at,
        traits.email_message_id,
        traits.first_name_at,
        traits.first_name_message_id,
        traits.locale_at,
        traits.locale_message_id,
        traits.declared_timezone_at,
        traits.declared_timezone_message_id,
        traits.email_opt_in,
        traits.email_opt_in_message_id
    from activity
    left join traits
        on activity.user_id = traits.user_id
),

final as (
    -- a time zone the engine cannot convert is treated as unknown, never as an error
    select
        joined.user_id,
        joined.email,
        joined.first_name,
        joined.locale,
        coalesce(declared_zone.timezone_name, context_zone.timezone_name) as timezone,
        joined.has_email_consent,
        joined.consent_updated_at,
        joined.last_received_at,
        -- the fold's bookkeeping: each trait's raw winner and its (event_at, message_id)
        joined.email_at,
        joined.email_message_id,
        joined.first_name_at,
        joined.first_name_message_id,
        joined.locale_at,
        joined.locale_message_id,
        joined.declared_timezone,
        joined.declared_timezone_at,
        joined.declared_timezone_message_id,
        joined.email_opt_in,
        joined.email_opt_in_message_id
    from joined
    left join known_timezones as declared_zone
        on joined.declared_timezone = declared_zone.timezone_name
    left join known_timezones as context_zone
        on joined.context_timezone = context_zone.timezone_name
)

select * from final

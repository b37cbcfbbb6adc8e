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

{% if is_incremental() %}
touched as {{ cte_hint('materialized') }} (
    {{ touched_users(incremental_cutoff('last_received_at')) }}
),
{% endif %}

resolved_identifies as (
    select
        identifies.*,
        coalesce(identifies.user_id, identity_map.user_id) as resolved_user_id
    from identifies
    left join identity_map
        on identifies.anonymous_id = identity_map.anonymous_id
),

traits as (
    -- the latest non-null value of each trait wins; consent likewise (absent means none)
    select
        resolved_user_id as user_id,
        {{ latest_value('email', 'event_at desc, message_id desc') }} as email,
        {{ latest_value('first_name', 'event_at desc, message_id desc') }} as first_name,
        {{ latest_value('locale', 'event_at desc, message_id desc') }} as locale,
        {{ latest_value('timezone', 'event_at desc, message_id desc') }} as declared_timezone,
        {{ latest_value('email_opt_in', 'event_at desc, message_id desc') }} as email_opt_in,
        max(case when email_opt_in is not null then event_at end) as consent_updated_at
    from resolved_identifies
    where resolved_user_id is not null
        {% if is_incremental() %}
        and resolved_user_id in (select user_id from touched)
        {% endif %}
    group by resolved_user_id
),

activity as (
    -- the latest context time zone of any event: each session carries its own latest, and
    -- sessions never share an instant, so the latest of those is the latest of all
    select
        user_id,
        {{ latest_value('context_timezone', 'context_timezone_at desc') }} as context_timezone,
        max(last_received_at) as last_received_at
    from sessions
    {% if is_incremental() %}
    where user_id in (select user_id from touched)
    {% endif %}
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
        activity.last_received_at
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
        joined.last_received_at
    from joined
    left join known_timezones as declared_zone
        on joined.declared_timezone = declared_zone.timezone_name
    left join known_timezones as context_zone
        on joined.context_timezone = context_zone.timezone_name
)

select * from final

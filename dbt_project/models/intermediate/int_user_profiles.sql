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

{%- set traits = [
    {'column': 'email', 'name': 'email', 'at': 'email_at'},
    {'column': 'first_name', 'name': 'first_name', 'at': 'first_name_at'},
    {'column': 'locale', 'name': 'locale', 'at': 'locale_at'},
    {'column': 'timezone', 'name': 'declared_timezone', 'at': 'declared_timezone_at'},
    {'column': 'email_opt_in', 'name': 'email_opt_in', 'at': 'consent_updated_at'},
] %}

read_traits as (
    -- per trait, the latest non-null value among the identifies read, and its ordering key
    -- (sqlfluff cannot place the lines of a loop that renders several times:)
    -- noqa: disable=LT02
    select
        resolved_user_id as user_id,
        {%- for trait in traits %}
        {{ latest_value(trait.column, 'event_at desc, message_id desc') }} as {{ trait.name }},
        max(case when {{ trait.column }} is not null then event_at end) as {{ trait.at }},
        {{ latest_value(
            'case when ' ~ trait.column ~ ' is not null then message_id end',
            'event_at desc, message_id desc',
        ) }} as {{ trait.name }}_message_id{{ ',' if not loop.last }}
        {%- endfor %}
    -- noqa: enable=LT02
    from resolved_identifies
    where resolved_user_id is not null
    group by resolved_user_id
),

traits as (
    -- the later of the stored and the newly read winner, trait by trait
    -- noqa: disable=LT02
    select
        coalesce(read_traits.user_id, stored.user_id) as user_id,
        {%- for trait in traits %}
        {%- set last_trait = loop.last %}
        {%- set read_is_later -%}
            read_traits.{{ trait.at }} is not null
            and (
                stored.{{ trait.at }} is null
                or read_traits.{{ trait.at }} > stored.{{ trait.at }}
                or (
                    read_traits.{{ trait.at }} = stored.{{ trait.at }}
                    and read_traits.{{ trait.name }}_message_id > stored.{{ trait.name }}_message_id
                )
            )
        {%- endset %}
        {%- for column in [trait.name, trait.at, trait.name ~ '_message_id'] %}
        case when {{ read_is_later }} then read_traits.{{ column }} else stored.{{ column }} end
            as {{ column }}{{ ',' if not (loop.last and last_trait) }}
        {%- endfor %}
        {%- endfor %}
    -- noqa: enable=LT02
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

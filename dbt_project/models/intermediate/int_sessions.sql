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

events as (
    select * from {{ ref('int_events') }}
),

{% if is_incremental() %}
touched as {{ cte_hint('materialized') }} (
    {{ touched_users(incremental_cutoff('last_received_at')) }}
),
{% endif %}

user_events as (
    select
        message_id,
        event_type,
        user_id,
        event_at,
        received_at,
        lag(event_at) over (
            partition by user_id order by event_at, message_id
        ) as previous_event_at
    from events
    where user_id is not null
        {% if is_incremental() %}
        and user_id in (select user_id from touched)
        {% endif %}
),

flagged as (
    -- a session starts with a user's first event and after every gap longer than the timeout
    select
        *,
        case
            when previous_event_at is null then 1
            when event_at > {{ dbt.dateadd('minute', var('session_timeout_minutes'), 'previous_event_at') }}
                then 1
            else 0
        end as starts_session
    from user_events
),

numbered as (
    select
        *,
        sum(starts_session) over (
            partition by user_id
            order by event_at, message_id
            rows between unbounded preceding and current row
        ) as session_number
    from flagged
),

sessions as (
    select
        user_id,
        session_number,
        min(event_at) as started_at,
        max(event_at) as ended_at,
        count(*) as event_count,
        sum(case when event_type = 'page' then 1 else 0 end) as page_view_count,
        max(received_at) as last_received_at
    from numbered
    group by user_id, session_number
),

final as (
    select
        {{ dbt.hash(dbt.concat(['user_id', "'|'", dbt.cast('session_number', dbt.type_string())])) }}
            as session_id,
        user_id,
        session_number,
        started_at,
        ended_at,
        event_count,
        page_view_count,
        last_received_at
    from sessions
)

select * from final

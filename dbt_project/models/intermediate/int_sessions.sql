{{
    config(
        materialized='incremental',
        incremental_strategy='tail_replace',
        unique_key='user_id',
        tail_column='started_at',
        indexes=postgres_indexes([['user_id'], ['last_received_at']]),
    )
}}

-- restitched_anonymous_ids() reads it on incremental runs:
-- depends_on: {{ ref('int_identity_map') }}

{#
    Folded forward: a tick rebuilds, per touched user, only the sessions from the first one
    that the user's earliest changed event can touch (one ending less than the timeout before
    it, or any later one); the sessions before it cannot change and keep their numbers. So a
    tick reads the touched users' recent events, not their whole history, and a late event
    costs what its lateness costs. The `tail_replace` strategy swaps exactly those sessions.
    The block at the top sets what a run reads (a full build: every event, numbered from each
    user's first session); the SQL below it is the same for both.
-#}

with

events as (
    select * from {{ ref('int_events') }}
),

{% if is_incremental() %}
{%- set cutoff = incremental_cutoff('last_received_at') -%}
{%- set timeout = var('session_timeout_minutes') -%}
{%- set session_edge = dbt.dateadd('minute', -1 * timeout, 'earliest_changes.changed_from') -%}
{%- set restarts_sql -%}
    with

    changed_events as (
        {{ received_or_restitched(
            ref('int_events'), cutoff, columns='user_id, event_at', where='user_id is not null'
        ) | indent(8) }}
    ),

    earliest_changes as (
        select user_id, min(event_at) as changed_from
        from changed_events
        group by user_id
    )

    select
        earliest_changes.user_id,
        coalesce(
            min(
                case
                    when stored.ended_at >= {{ session_edge }}
                        and stored.started_at < earliest_changes.changed_from
                        then stored.started_at
                end
            ),
            earliest_changes.changed_from
        ) as restart_at,
        count(
            case
                when stored.ended_at < {{ session_edge }}
                    then 1
            end
        ) as kept_sessions
    from earliest_changes
    left join {{ this }} as stored
        on earliest_changes.user_id = stored.user_id
    group by earliest_changes.user_id, earliest_changes.changed_from
{%- endset -%}
{#- the earliest restart as a literal, so the scan of int_events skips older row groups -#}
{%- set restart_floor = earliest(restarts_sql, 'restart_at') %}

restarts as {{ cte_hint('materialized') }} (
    {{ restarts_sql | indent(4) }}
),

user_events as (
    -- the touched users' events from their restart on
    select
        events.*,
        restarts.kept_sessions
    from events
    inner join restarts
        on events.user_id = restarts.user_id
        and events.event_at >= restarts.restart_at
    {%- if restart_floor is none %}
    where 1 = 0
    {%- else %}
    where events.event_at >= {{ restart_floor }}
    {%- endif %}
),

{% else %}

user_events as (
    -- a full build numbers every user's sessions from the first
    select
        events.*,
        0 as kept_sessions
    from events
    where events.user_id is not null
),
{% endif %}

ordered_events as (
    select
        message_id,
        event_type,
        user_id,
        event_at,
        received_at,
        context_timezone,
        kept_sessions,
        lag(event_at) over (
            partition by user_id order by event_at, message_id
        ) as previous_event_at
    from user_events
),

flagged as (
    -- a session starts with a user's first event (of the rebuilt tail) and after every gap
    -- longer than the timeout; the tail starts where a session did, so its first event does too
    select
        *,
        case
            when previous_event_at is null then 1
            when event_at
                > {{ dbt.dateadd('minute', var('session_timeout_minutes'), 'previous_event_at') }}
                then 1
            else 0
        end as starts_session
    from ordered_events
),

numbered as (
    select
        *,
        kept_sessions + sum(starts_session) over (
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
        {{ latest_value('context_timezone', 'event_at desc, message_id desc') }}
            as context_timezone,
        max(case when context_timezone is not null then event_at end) as context_timezone_at,
        max(received_at) as last_received_at
    from numbered
    group by user_id, session_number
),

final as (
    select
        {{ dbt.hash(dbt.concat([
            'user_id', "'|'", dbt.cast('session_number', dbt.type_string())
        ])) }} as session_id,
        user_id,
        session_number,
        started_at,
        ended_at,
        event_count,
        page_view_count,
        context_timezone,
        context_timezone_at,
        last_received_at
    from sessions
)

select * from final
{{ full_build_order('started_at') }}

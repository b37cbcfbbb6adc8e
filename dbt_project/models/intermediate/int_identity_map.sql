{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='anonymous_id',
        indexes=postgres_indexes([['anonymous_id'], ['last_received_at'], ['linked_received_at']]),
    )
}}

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

aliases as (
    select * from {{ ref('stg_rudderstack__aliases') }}
),

links as (
    -- every event that carries both ids links them; alias links previous_id explicitly
    select
        anonymous_id,
        user_id,
        event_at,
        received_at
    from identifies
    where anonymous_id is not null and user_id is not null
    union all
    select
        anonymous_id,
        user_id,
        event_at,
        received_at
    from tracks
    where anonymous_id is not null and user_id is not null
    union all
    select
        anonymous_id,
        user_id,
        event_at,
        received_at
    from pages
    where anonymous_id is not null and user_id is not null
    union all
    select
        previous_id as anonymous_id,
        user_id,
        event_at,
        received_at
    from aliases
),

new_links as (
    select
        anonymous_id,
        user_id,
        event_at,
        received_at,
        received_at as last_received_at
    from links
    {% if is_incremental() %}
    where received_at >= {{ incremental_cutoff('last_received_at') }}
    {% endif %}
),

candidate_links as (
    select * from new_links
    {% if is_incremental() %}
    union all
    -- the stored first link competes with the new ones: an out-of-order earlier link wins
    select
        anonymous_id,
        user_id,
        identified_at as event_at,
        linked_received_at as received_at,
        last_received_at
    from {{ this }}
    where anonymous_id in (select anonymous_id from new_links)
    {% endif %}
),

ranked as (
    select
        anonymous_id,
        user_id,
        event_at,
        received_at,
        row_number() over (
            partition by anonymous_id order by event_at, user_id, received_at
        ) as link_rank,
        max(last_received_at) over (partition by anonymous_id) as last_received_at
    from candidate_links
),

final as (
    select
        anonymous_id,
        user_id,
        event_at as identified_at,
        -- when the winning link arrived: the map of this anonymous id last changed then.
        -- A returning visitor identifying again (same link, later) leaves it alone, so their
        -- anonymous history is not re-attributed on every login.
        received_at as linked_received_at,
        last_received_at
    from ranked
    where link_rank = 1
)

select * from final

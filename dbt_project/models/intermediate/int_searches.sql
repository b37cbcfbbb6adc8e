with

tracks as (
    select * from {{ ref('stg_rudderstack__tracks') }}
),

identity_map as (
    select * from {{ ref('int_identity_map') }}
),

searches as (
    select
        tracks.message_id,
        coalesce(tracks.user_id, identity_map.user_id) as user_id,
        tracks.anonymous_id,
        lower(tracks.search_query) as search_term,
        tracks.event_at as searched_at,
        tracks.received_at
    from tracks
    left join identity_map
        on tracks.anonymous_id = identity_map.anonymous_id
    where tracks.event_name = 'Products Searched'
        and tracks.search_query is not null
)

select * from searches

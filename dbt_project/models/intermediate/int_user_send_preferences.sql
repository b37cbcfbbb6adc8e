{{ config(materialized='table') }}

with

profiles as (
    select * from {{ ref('int_user_profiles') }}
),

email_events as (
    select * from {{ ref('stg_rudderstack__email_events') }}
),

population_timezone as (
    -- the most common known time zone stands in for users who never told us theirs
    select coalesce(max(timezone), '{{ var("default_timezone") }}') as timezone
    from (
        select
            timezone,
            row_number() over (order by count(*) desc, timezone) as timezone_rank
        from profiles
        where timezone is not null
        group by timezone
    ) as ranked
    where timezone_rank = 1
),

users as (
    select
        profiles.user_id,
        coalesce(profiles.timezone, population_timezone.timezone) as timezone,
        profiles.timezone is null as is_timezone_assumed
    from profiles
    cross join population_timezone
),

engagement_hours as (
    -- opens and clicks, in the user's own local hour
    select
        email_events.user_id,
        extract(hour from {{ utc_to_local('email_events.event_at', 'users.timezone') }})
            as local_hour
    from email_events
    inner join users
        on email_events.user_id = users.user_id
    where email_events.email_event_type in ('opened', 'clicked')
),

user_hours as (
    select
        user_id,
        local_hour,
        sum(count(*)) over (partition by user_id) as engagement_count,
        row_number() over (
            partition by user_id order by count(*) desc, local_hour
        ) as hour_rank
    from engagement_hours
    group by user_id, local_hour
),

population_hour as (
    select
        coalesce(max(local_hour), {{ var('default_send_hour') }}) as local_hour,
        case when max(local_hour) is null then 'default' else 'population' end as source
    from (
        select
            local_hour,
            row_number() over (order by count(*) desc, local_hour) as hour_rank
        from engagement_hours
        group by local_hour
    ) as ranked
    where hour_rank = 1
),

final as (
    select
        users.user_id,
        users.timezone,
        users.is_timezone_assumed,
        cast(case
            when user_hours.engagement_count >= {{ var('min_engagements_for_send_hour') }}
                then user_hours.local_hour
            else population_hour.local_hour
        end as {{ dbt.type_int() }}) as best_send_hour_local,
        case
            when user_hours.engagement_count >= {{ var('min_engagements_for_send_hour') }}
                then 'user'
            else population_hour.source
        end as send_hour_source
    from users
    cross join population_hour
    left join user_hours
        on users.user_id = user_hours.user_id
        and user_hours.hour_rank = 1
)

select * from final

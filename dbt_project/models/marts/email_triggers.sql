{{
    config(
        materialized='table',
        contract={'enforced': true},
    )
}}

{%- set quiet_start = var('quiet_hours_start') | int -%}
{%- set quiet_end = var('quiet_hours_end') | int -%}

with

candidates as (
    select * from {{ ref('int_trigger_candidates') }}
),

profiles as (
    select * from {{ ref('int_user_profiles') }}
),

send_preferences as (
    select * from {{ ref('int_user_send_preferences') }}
),

suppressions as (
    select * from {{ ref('int_email_suppressions') }}
),

sends as (
    -- a retryable failure neither owns its trigger_id nor counts towards cooldowns and caps
    select * from {{ ref('int_email_sends') }}
    where is_retryable_failure is not true
),

orders as (
    select * from {{ ref('int_orders') }}
),

due as (
    -- eligible now and not yet expired
    select * from candidates
    where eligible_at <= {{ now_utc() }}
        and expires_at > {{ now_utc() }}
),

reachable as (
    -- consent granted (latest opt-in wins, none means no), an address, no suppression
    select
        due.*,
        profiles.email,
        profiles.first_name,
        profiles.locale,
        send_preferences.timezone,
        send_preferences.best_send_hour_local
    from due
    inner join profiles
        on due.user_id = profiles.user_id
    inner join send_preferences
        on due.user_id = send_preferences.user_id
    left join suppressions
        on profiles.email = suppressions.email
    where profiles.has_email_consent
        and profiles.email is not null
        and suppressions.hard_bounced_at is null
        and suppressions.rejected_at is null
        and suppressions.complained_at is null
        and (
            suppressions.unsubscribed_at is null
            or suppressions.unsubscribed_at < profiles.consent_updated_at
        )
),

not_purchased_since as (
    -- an order after the situation began makes the email moot
    select reachable.*
    from reachable
    where not exists (
        select 1
        from orders
        where orders.user_id = reachable.user_id
            and reachable.situation_at is not null
            and orders.ordered_at > reachable.situation_at
            and orders.ordered_at <= {{ now_utc() }}
    )
),

not_sent as (
    -- the ledger owns a trigger_id once it has seen it (retryable failures aside)
    select not_purchased_since.*
    from not_purchased_since
    left join sends
        on not_purchased_since.trigger_id = sends.trigger_id
    where sends.trigger_id is null
),

outside_cooldown as (
    -- the same campaign reaches the same user at most once per its cooldown
    select not_sent.*
    from not_sent
    where not exists (
        select 1
        from sends
        where sends.user_id = not_sent.user_id
            and sends.campaign = not_sent.campaign
            and sends.triggered_at
                > {{ dbt.dateadd('hour', '-1 * ' ~ campaign_setting('not_sent.campaign', 'cooldown_hours'), now_utc()) }}
    )
),

recent_send_counts as (
    select
        user_id,
        count(*) as recent_sends
    from sends
    where not is_held_out
        and triggered_at > {{ dbt.dateadd('hour', -24, now_utc()) }}
    group by user_id
),

ranked as (
    -- one email per campaign per user, then campaigns by priority within the daily cap
    select
        *,
        row_number() over (
            partition by user_id, campaign order by eligible_at desc, trigger_id
        ) as campaign_rank
    from outside_cooldown
),

capped as (
    select
        ranked.*,
        row_number() over (
            partition by ranked.user_id
            order by {{ campaign_setting('ranked.campaign', 'priority') }}, ranked.eligible_at, ranked.trigger_id
        ) as user_rank,
        coalesce(recent_send_counts.recent_sends, 0) as recent_sends
    from ranked
    left join recent_send_counts
        on ranked.user_id = recent_send_counts.user_id
    where ranked.campaign_rank = 1
),

within_cap as (
    select * from capped
    where user_rank + recent_sends <= {{ var('max_emails_per_user_per_day') }}
),

localized as (
    select
        within_cap.*,
        {{ utc_to_local('within_cap.eligible_at', 'within_cap.timezone') }} as eligible_local,
        {{ campaign_setting('within_cap.campaign', 'send_window_hours') }} as send_window_hours
    from within_cap
),

best_hour as (
    -- the next occurrence of the user's best hour, if the campaign may wait that long
    select
        localized.*,
        case
            when {{ dbt.dateadd('hour', 'best_send_hour_local', dbt.date_trunc('day', 'eligible_local')) }}
                >= eligible_local
                then {{ dbt.dateadd('hour', 'best_send_hour_local', dbt.date_trunc('day', 'eligible_local')) }}
            else {{ dbt.dateadd('hour', 'best_send_hour_local + 24', dbt.date_trunc('day', 'eligible_local')) }}
        end as best_hour_local
    from localized
),

preferred as (
    select
        best_hour.*,
        case
            when send_window_hours > 0
                and best_hour_local <= {{ dbt.dateadd('hour', 'send_window_hours', 'eligible_local') }}
                then best_hour_local
            else eligible_local
        end as preferred_local
    from best_hour
),

polite as (
    -- inside quiet hours the email waits for the end of them, local time
    select
        preferred.*,
        case
        {%- if quiet_start > quiet_end %}
            when extract(hour from preferred_local) >= {{ quiet_start }}
                then {{ dbt.dateadd('hour', quiet_end + 24, dbt.date_trunc('day', 'preferred_local')) }}
            when extract(hour from preferred_local) < {{ quiet_end }}
                then {{ dbt.dateadd('hour', quiet_end, dbt.date_trunc('day', 'preferred_local')) }}
        {%- elif quiet_start < quiet_end %}
            when extract(hour from preferred_local) >= {{ quiet_start }}
                and extract(hour from preferred_local) < {{ quiet_end }}
                then {{ dbt.dateadd('hour', quiet_end, dbt.date_trunc('day', 'preferred_local')) }}
        {%- endif %}
            else preferred_local
        end as send_local
    from preferred
),

scheduled as (
    select
        polite.*,
        {{ local_to_utc('polite.send_local', 'polite.timezone') }} as send_after_utc
    from polite
),

final as (
    select
        cast(trigger_id as {{ dbt.type_string() }}) as trigger_id,
        cast(campaign as {{ dbt.type_string() }}) as campaign,
        cast(user_id as {{ dbt.type_string() }}) as user_id,
        cast(email as {{ dbt.type_string() }}) as email,
        cast(first_name as {{ dbt.type_string() }}) as first_name,
        cast(locale as {{ dbt.type_string() }}) as locale,
        cast(timezone as {{ dbt.type_string() }}) as timezone,
        cast(eligible_at as {{ dbt.type_timestamp() }}) as eligible_at,
        cast(send_after_utc as {{ dbt.type_timestamp() }}) as send_after,
        cast(expires_at as {{ dbt.type_timestamp() }}) as expires_at,
        {{ hash_fraction("user_id || '|' || campaign") }}
            < {{ campaign_setting('campaign', 'holdout_share') }} as holdout,
        {{ json_to_text(json_merge('payload', json_object([
            ('trigger_id', 'trigger_id'),
            ('campaign', 'campaign'),
            ('first_name', 'first_name'),
        ]))) }} as payload,
        {{ now_utc() }} as computed_at
    from scheduled
    -- a send time pushed past expiry by quiet hours means the moment has passed
    where send_after_utc < expires_at
)

select * from final

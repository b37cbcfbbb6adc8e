with

candidates as {{ cte_hint('materialized') }} (
    -- read twice, for the decisions and for their payload at the end (with_payload), and
    -- computed once: on DuckDB this is the six rules themselves (an ephemeral model there)
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

purchase_scores as (
    select * from {{ ref('stg_signalmail__purchase_scores') }}
),

identity_map as (
    select * from {{ ref('int_identity_map') }}
),

first_identified as (
    -- when each user's first anonymous browser was linked to them: an anonymous shopper's
    -- cart becomes theirs, and mailable, only then
    select
        user_id,
        min(linked_received_at) as identified_received_at
    from identity_map
    group by user_id
),

due as (
    -- eligible now and not yet expired. received_at becomes the later of the situation's
    -- newest event and the user's first identification: a shopper who leaves a cart and signs
    -- in minutes later could not be mailed before, so latency starts there. The first link is
    -- the earliest candidate, so a later sign-in on another device never shortens the
    -- measured latency.
    select
        candidates.trigger_id,
        candidates.campaign,
        candidates.user_id,
        candidates.situation_at,
        case
            when first_identified.identified_received_at > candidates.received_at
                or candidates.received_at is null
                then first_identified.identified_received_at
            else candidates.received_at
        end as received_at,
        candidates.eligible_at,
        candidates.expires_at
    from candidates
    left join first_identified
        on candidates.user_id = first_identified.user_id
    where candidates.eligible_at <= {{ now_utc() }}
        and candidates.expires_at > {{ now_utc() }}
),

reachable as {{ cte_hint('materialized') }} (
    -- every due trigger with its contact data, and the first reason it may not be sent that
    -- is known from the user alone (null: none)
    select
        due.*,
        profiles.email,
        profiles.first_name,
        profiles.locale,
        send_preferences.timezone,
        send_preferences.best_send_hour_local,
        purchase_scores.purchase_probability,
        case
            -- the ledger owns a trigger_id once it has seen it (retryable failures aside)
            when in_ledger.trigger_id is not null then 'in_ledger'
            -- consent is data: the latest opt-in wins and none means no
            when profiles.has_email_consent is not true then 'no_consent'
            when profiles.email is null then 'no_email'
            when send_preferences.user_id is null then 'no_send_preferences'
            when suppressions.hard_bounced_at is not null then 'hard_bounced'
            when suppressions.rejected_at is not null then 'rejected'
            when suppressions.complained_at is not null then 'complained'
            -- an unsubscribe counts until the user opts in again after it
            when suppressions.unsubscribed_at >= profiles.consent_updated_at
                or (
                    suppressions.unsubscribed_at is not null and profiles.consent_updated_at is null
                )
                then 'unsubscribed'
        end as unreachable_reason
    from due
    left join profiles
        on due.user_id = profiles.user_id
    left join send_preferences
        on due.user_id = send_preferences.user_id
    left join suppressions
        on profiles.email = suppressions.email
    left join sends as in_ledger
        on due.trigger_id = in_ledger.trigger_id
    left join purchase_scores
        on due.user_id = purchase_scores.user_id
),

reachable_only as (
    select * from reachable
    where unreachable_reason is null
),

purchased_since as (
    -- an order after the situation began makes the email moot
    select reachable_only.trigger_id
    from reachable_only
    where
        exists (
            select 1
            from orders
            where orders.user_id = reachable_only.user_id
                and reachable_only.situation_at is not null
                and orders.ordered_at > reachable_only.situation_at
                and orders.ordered_at <= {{ now_utc() }}
        )
),

in_cooldown as (
    -- the same campaign reaches the same user at most once per its cooldown
    select reachable_only.trigger_id
    from reachable_only
    where
        exists (
            select 1
            from sends
            where sends.user_id = reachable_only.user_id
                and sends.campaign = reachable_only.campaign
                and sends.triggered_at > {{ dbt.dateadd(
                    'hour',
                    '-1 * ' ~ campaign_setting('reachable_only.campaign', 'cooldown_hours'),
                    now_utc(),
                ) }}
        )
),

checked as {{ cte_hint('materialized') }} (
    select
        reachable.*,
        case
            when reachable.unreachable_reason is not null then reachable.unreachable_reason
            when purchased_since.trigger_id is not null then 'purchased_since'
            when in_cooldown.trigger_id is not null then 'cooldown'
            -- predicted intent: a scored user below the campaign's minimum (unscored users pass)
            when reachable.purchase_probability < cast({{ campaign_setting(
                'reachable.campaign', 'min_purchase_probability', optional=true
            ) }} as {{ dbt.type_float() }}) then 'below_min_probability'
        end as excluded_reason
    from reachable
    left join purchased_since
        on reachable.trigger_id = purchased_since.trigger_id
    left join in_cooldown
        on reachable.trigger_id = in_cooldown.trigger_id
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

ranked as {{ cte_hint('materialized') }} (
    -- one email per campaign per user: the newest situation
    select
        *,
        row_number() over (
            partition by user_id, campaign order by eligible_at desc, trigger_id asc
        ) as campaign_rank
    from checked
    where excluded_reason is null
),

capped as (
    -- campaigns by priority within the daily cap (sends of the last 24 hours count)
    select
        ranked.*,
        row_number() over (
            partition by ranked.user_id
            order by
                {{ campaign_setting('ranked.campaign', 'priority') }},
                ranked.eligible_at,
                ranked.trigger_id
        ) as user_rank,
        coalesce(recent_send_counts.recent_sends, 0) as recent_sends
    from ranked
    left join recent_send_counts
        on ranked.user_id = recent_send_counts.user_id
    where ranked.campaign_rank = 1
),

localized as (
    select
        capped.*,
        {{ utc_to_local('capped.eligible_at', 'capped.timezone') }} as eligible_local,
        {{ utc_to_local(now_utc(), 'capped.timezone') }} as now_local,
        {{ utc_to_local('capped.received_at', 'capped.timezone') }} as received_local,
        {{ campaign_setting('capped.campaign', 'send_window_hours') }} as send_window_hours
    from capped
),

best_hour as (
    -- the next occurrence of the user's best hour, if the campaign may wait that long
    select
        localized.*,
        case
            when {{ dbt.dateadd(
                'hour', 'best_send_hour_local', dbt.date_trunc('day', 'eligible_local')
            ) }} >= eligible_local
                then {{ dbt.dateadd(
                    'hour', 'best_send_hour_local', dbt.date_trunc('day', 'eligible_local')
                ) }}
            else {{ dbt.dateadd(
                'hour', 'best_send_hour_local + 24', dbt.date_trunc('day', 'eligible_local')
            ) }}
        end as best_hour_local
    from localized
),

preferred as (
    select
        best_hour.*,
        case
            when send_window_hours > 0
                and best_hour_local <= {{ dbt.dateadd(
                    'hour', 'send_window_hours', 'eligible_local'
                ) }}
                then best_hour_local
            else eligible_local
        end as preferred_local
    from best_hour
),

polite as (
    -- inside quiet hours (local time) the email waits for the end of them. Judged at its
    -- preferred time, and again now when that has passed: a situation known late (a sign-in,
    -- a late upload), a retry or a catch-up after an outage must not send in the night
    select
        preferred.*,
        {{ after_quiet_hours('preferred_local') }} as polite_local,
        {{ after_quiet_hours('now_local') }} as polite_now_local,
        -- when it is due, for latency: not before the situation was known (received), and
        -- out of quiet hours; unlike send_after it does not move with the present moment
        {{ after_quiet_hours(
            'case when received_local > preferred_local then received_local '
            ~ 'else preferred_local end'
        ) }} as due_local
    from preferred
),

scheduled as (
    select
        polite.*,
        {{ local_to_utc(
            'case when polite.polite_local < polite.now_local '
            ~ 'and polite.polite_now_local > polite.now_local '
            ~ 'then polite.polite_now_local else polite.polite_local end',
            'polite.timezone',
        ) }} as send_after,
        {{ local_to_utc('polite.due_local', 'polite.timezone') }} as due_after
    from polite
),

campaign_send_counts as (
    select
        campaign,
        count(*) as campaign_recent_sends
    from sends
    where not is_held_out
        and triggered_at > {{ dbt.dateadd('hour', -24, now_utc()) }}
    group by campaign
),

limited as (
    -- a campaign's daily_limit goes to its likeliest buyers first (unscored users last),
    -- ranked among the triggers the user's cap and expiry leave
    select
        scheduled.*,
        row_number() over (
            partition by
                scheduled.campaign,
                (
                    scheduled.user_rank + scheduled.recent_sends
                    > {{ var('max_emails_per_user_per_day') }}
                    or scheduled.send_after >= scheduled.expires_at
                )
            order by
                coalesce(scheduled.purchase_probability, -1) desc,
                scheduled.eligible_at asc,
                scheduled.trigger_id asc
        ) as daily_limit_rank,
        coalesce(campaign_send_counts.campaign_recent_sends, 0) as campaign_recent_sends,
        cast(
            {{ campaign_setting('scheduled.campaign', 'daily_limit', optional=true) }}
            as {{ dbt.type_int() }}
        ) as daily_limit
    from scheduled
    left join campaign_send_counts
        on scheduled.campaign = campaign_send_counts.campaign
),

decided as (
    -- excluded before ranking
    select
        trigger_id,
        campaign,
        user_id,
        email,
        first_name,
        locale,
        timezone,
        received_at,
        eligible_at,
        expires_at,
        cast(null as {{ dbt.type_timestamp() }}) as send_after,
        cast(null as {{ dbt.type_timestamp() }}) as due_after,
        excluded_reason as decision
    from checked
    where excluded_reason is not null
    union all
    -- a newer situation of the same campaign for the same user goes instead
    select
        trigger_id,
        campaign,
        user_id,
        email,
        first_name,
        locale,
        timezone,
        received_at,
        eligible_at,
        expires_at,
        cast(null as {{ dbt.type_timestamp() }}) as send_after,
        cast(null as {{ dbt.type_timestamp() }}) as due_after,
        'superseded' as decision
    from ranked
    where campaign_rank > 1
    union all
    select
        trigger_id,
        campaign,
        user_id,
        email,
        first_name,
        locale,
        timezone,
        received_at,
        eligible_at,
        expires_at,
        send_after,
        due_after,
        case
            when user_rank + recent_sends > {{ var('max_emails_per_user_per_day') }}
                then 'daily_cap'
            -- a send time pushed past expiry by quiet hours means the moment has passed
            when send_after >= expires_at then 'expires_before_send'
            when daily_limit_rank + campaign_recent_sends > daily_limit then 'campaign_daily_limit'
            when send_after > {{ now_utc() }} then 'scheduled'
            else 'send'
        end as decision
    from limited
),

with_payload as (
    -- the payload joins the decisions here, at the end: carried through the checks above,
    -- every sort and materialized CTE moved each trigger's product lists along with it. A left
    -- join: a candidate whose trigger_id is null stays, for email_triggers' contract to refuse
    select
        decided.*,
        candidates.payload
    from decided
    left join candidates
        on decided.trigger_id = candidates.trigger_id
),

final as (
    select
        cast(trigger_id as {{ dbt.type_string() }}) as trigger_id,
        cast(campaign as {{ dbt.type_string() }}) as campaign,
        cast(user_id as {{ dbt.type_string() }}) as user_id,
        cast(decision as {{ dbt.type_string() }}) as decision,
        cast(email as {{ dbt.type_string() }}) as email,
        cast(first_name as {{ dbt.type_string() }}) as first_name,
        cast(locale as {{ dbt.type_string() }}) as locale,
        cast(timezone as {{ dbt.type_string() }}) as timezone,
        cast(received_at as {{ dbt.type_timestamp() }}) as received_at,
        cast(eligible_at as {{ dbt.type_timestamp() }}) as eligible_at,
        cast(send_after as {{ dbt.type_timestamp() }}) as send_after,
        -- latency is measured from here: the email cannot be due before its preferred send
        -- time (out of quiet hours), nor before the collector received the event that completed
        -- the situation (or made its user known); a wait for quiet hours to end because the
        -- watch was late (a catch-up, a retry) is latency
        cast(
            case
                when received_at > due_after then received_at
                else due_after
            end as {{ dbt.type_timestamp() }}
        ) as due_at,
        cast(expires_at as {{ dbt.type_timestamp() }}) as expires_at,
        {{ hash_fraction("user_id || '|' || campaign") }} < {{ campaign_setting(
            'campaign', 'holdout_share'
        ) }} as holdout,
        {{ json_to_text(json_merge('payload', json_object([
            ('trigger_id', 'trigger_id'),
            ('campaign', 'campaign'),
            ('first_name', 'first_name'),
        ]))) }} as payload,
        {{ now_utc() }} as computed_at
    from with_payload
)

select * from final

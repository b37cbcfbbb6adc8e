with

ledger as (
    select * from {{ ref('stg_signalmail__send_ledger') }}
),

email_events as (
    select * from {{ ref('stg_rudderstack__email_events') }}
),

sent_events as (
    -- "Email Sent" events the target emits; they cover sends whose ledger is not readable here
    select
        trigger_id,
        min(campaign) as campaign,
        min(user_id) as user_id,
        min(email) as email,
        min(mandrill_id) as mandrill_id,
        min(event_at) as sent_at
    from email_events
    where email_event_type = 'sent'
        and trigger_id is not null
    group by trigger_id
),

ledger_rows as (
    select * from ledger
    where trigger_id is not null
),

combined as (
    select
        coalesce(ledger_rows.trigger_id, sent_events.trigger_id) as trigger_id,
        coalesce(ledger_rows.campaign, sent_events.campaign) as campaign,
        coalesce(ledger_rows.user_id, sent_events.user_id) as user_id,
        coalesce(ledger_rows.email, sent_events.email) as email,
        coalesce(ledger_rows.send_state, 'sent') as send_state,
        coalesce(ledger_rows.mandrill_id, sent_events.mandrill_id) as mandrill_id,
        coalesce(ledger_rows.attempts, 0) as attempts,
        coalesce(ledger_rows.created_at, ledger_rows.sent_at, sent_events.sent_at) as triggered_at,
        coalesce(ledger_rows.sent_at, sent_events.sent_at) as sent_at,
        ledger_rows.due_at
    from ledger_rows
    full outer join sent_events
        on ledger_rows.trigger_id = sent_events.trigger_id
),

final as (
    select
        trigger_id,
        campaign,
        user_id,
        email,
        send_state,
        mandrill_id,
        attempts,
        triggered_at,
        sent_at,
        due_at,
        -- seconds from due (email_triggers.due_at) to Mandrill's accepted answer
        case
            when send_state in ('sent', 'queued', 'scheduled')
                then {{ epoch_seconds('sent_at') }} - {{ epoch_seconds('due_at') }}
        end as send_latency_seconds,
        send_state = 'held_out' as is_held_out,
        send_state in ('sent', 'queued', 'scheduled') as is_sent,
        -- a failure the target may still retry: the trigger is offered again on later runs
        send_state = 'failed' and attempts < {{ var('max_send_attempts') }} as is_retryable_failure
    from combined
)

select * from final

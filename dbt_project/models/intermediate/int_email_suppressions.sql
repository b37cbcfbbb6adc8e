with

email_events as (
    select * from {{ ref('stg_rudderstack__email_events') }}
),

final as (
    -- hard bounces, rejects and complaints are permanent; an unsubscribe holds until a later
    -- opt-in (compared with the consent time in email_triggers)
    select
        email,
        max(case when email_event_type = 'unsubscribed' then event_at end) as unsubscribed_at,
        max(
            case
                when email_event_type = 'bounced' and coalesce(bounce_type, 'hard') = 'hard'
                    then event_at
            end
        ) as hard_bounced_at,
        -- a rejection for the sender's sake (an unsigned or unverified domain, a test key's
        -- limit) or a passing one (soft-bounce) says nothing lasting about the address;
        -- null (a reason not sent, or a row staged before the column) suppresses, to be safe
        max(
            case
                when email_event_type = 'rejected'
                    and coalesce(reject_reason, '') not in (
                        'soft-bounce', 'unsigned', 'invalid-sender', 'test-mode-limit'
                    )
                    then event_at
            end
        ) as rejected_at,
        max(case when email_event_type = 'complained' then event_at end) as complained_at
    from email_events
    where email is not null
        and email_event_type in ('unsubscribed', 'bounced', 'rejected', 'complained')
        -- Mandrill's word only: the write key is public (it is in the shop's pages), and a
        -- forged "Marked as Spam" would stop a stranger's email for good. Null: a row staged
        -- before library_name existed, taken as before until a full refresh reads it again.
        and coalesce(library_name, 'signalmail-mandrill-webhook') = 'signalmail-mandrill-webhook'
    group by email
)

select * from final
where unsubscribed_at is not null
    or hard_bounced_at is not null
    or rejected_at is not null
    or complained_at is not null

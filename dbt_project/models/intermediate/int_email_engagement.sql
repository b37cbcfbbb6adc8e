with

email_events as (
    select * from {{ ref('stg_rudderstack__email_events') }}
),

final as (
    select
        trigger_id,
        min(campaign) as campaign,
        min(user_id) as user_id,
        min(email) as email,
        min(case when email_event_type = 'delivered' then event_at end) as delivered_at,
        min(case when email_event_type = 'opened' then event_at end) as first_opened_at,
        min(case when email_event_type = 'clicked' then event_at end) as first_clicked_at,
        sum(case when email_event_type = 'opened' then 1 else 0 end) as open_count,
        sum(case when email_event_type = 'clicked' then 1 else 0 end) as click_count,
        min(case when email_event_type in ('bounced', 'rejected') then event_at end) as bounced_at,
        min(case when email_event_type = 'complained' then event_at end) as complained_at,
        min(case when email_event_type = 'unsubscribed' then event_at end) as unsubscribed_at
    from email_events
    where trigger_id is not null
    group by trigger_id
)

select * from final

{{
    config(
        materialized='table',
        contract={'enforced': true},
    )
}}

with

decisions as (
    select * from {{ ref('int_trigger_decisions') }}
),

final as (
    -- the emails to send: due now, or waiting for their send time (the user's best hour, the
    -- end of quiet hours); the target sends a row once `send_after` has passed
    select
        trigger_id,
        campaign,
        user_id,
        email,
        first_name,
        locale,
        timezone,
        eligible_at,
        send_after,
        due_at,
        expires_at,
        holdout,
        payload,
        computed_at
    from decisions
    where decision in ('send', 'scheduled')
)

select * from final

{{ config(tags=['nightly']) }}

with

decisions as (
    select * from {{ ref('int_trigger_decisions') }}
),

final as (
    -- every due trigger and what became of it, for "why did (not) this user get an email?"
    select
        trigger_id,
        campaign,
        user_id,
        decision,
        decision in ('send', 'scheduled') as is_sendable,
        received_at,
        eligible_at,
        send_after,
        due_at,
        expires_at,
        holdout,
        computed_at
    from decisions
)

select * from final

with

sends as (
    select * from {{ ref('int_email_sends') }}
),

engagement as (
    select * from {{ ref('int_email_engagement') }}
),

orders as (
    select * from {{ ref('int_orders') }}
),

triggered as (
    select
        sends.trigger_id,
        sends.campaign,
        sends.user_id,
        sends.triggered_at,
        sends.is_sent,
        sends.is_held_out,
        engagement.delivered_at,
        engagement.first_opened_at,
        engagement.first_clicked_at,
        engagement.bounced_at
    from sends
    left join engagement
        on sends.trigger_id = engagement.trigger_id
    where sends.campaign is not null
        and sends.triggered_at is not null
),

attributed_orders as (
    -- orders within the attribution window after the send (or the hold-out decision)
    select
        triggered.trigger_id,
        count(orders.order_id) as order_count,
        coalesce(sum(orders.revenue), 0) as revenue
    from triggered
    inner join orders
        on triggered.user_id = orders.user_id
        and triggered.triggered_at < orders.ordered_at
        and orders.ordered_at <= {{ dbt.dateadd(
            'day', var('attribution_days'), 'triggered.triggered_at'
        ) }}
    group by triggered.trigger_id
),

outcomes as (
    select
        triggered.*,
        cast({{ dbt.date_trunc('day', 'triggered.triggered_at') }} as date) as triggered_on,
        coalesce(attributed_orders.order_count, 0) > 0 as is_converted,
        coalesce(attributed_orders.revenue, 0) as revenue
    from triggered
    left join attributed_orders
        on triggered.trigger_id = attributed_orders.trigger_id
),

daily as (
    select
        campaign,
        triggered_on,
        count(*) as triggered_count,
        sum(case when is_sent then 1 else 0 end) as sent_count,
        sum(case when is_held_out then 1 else 0 end) as held_out_count,
        sum(case when is_sent and bounced_at is null then 1 else 0 end) as delivered_count,
        sum(case when is_sent and first_opened_at is not null then 1 else 0 end) as opened_count,
        sum(case when is_sent and first_clicked_at is not null then 1 else 0 end) as clicked_count,
        sum(case when is_sent and is_converted then 1 else 0 end) as converted_count,
        sum(case when is_held_out and is_converted then 1 else 0 end) as held_out_converted_count,
        sum(case when is_sent then revenue else 0 end) as revenue,
        sum(case when is_held_out then revenue else 0 end) as held_out_revenue
    from outcomes
    group by campaign, triggered_on
),

rates as (
    select
        daily.*,
        case when sent_count > 0 then 1.0 * converted_count / sent_count end
            as treated_conversion_rate,
        case when held_out_count > 0 then 1.0 * held_out_converted_count / held_out_count end
            as held_out_conversion_rate
    from daily
),

final as (
    -- uplift = treated minus held-out conversion rate; 95% interval by the normal
    -- approximation of a difference of two proportions (wide on small days, by design)
    select
        campaign,
        triggered_on,
        triggered_count,
        sent_count,
        held_out_count,
        delivered_count,
        opened_count,
        clicked_count,
        converted_count,
        held_out_converted_count,
        {{ rounded('revenue', 2) }} as revenue,
        {{ rounded('held_out_revenue', 2) }} as held_out_revenue,
        treated_conversion_rate,
        held_out_conversion_rate,
        treated_conversion_rate - held_out_conversion_rate as uplift,
        treated_conversion_rate - held_out_conversion_rate - 1.96 * sqrt(
            treated_conversion_rate * (1 - treated_conversion_rate) / sent_count
            + held_out_conversion_rate * (1 - held_out_conversion_rate) / held_out_count
        ) as uplift_ci_lower,
        treated_conversion_rate - held_out_conversion_rate + 1.96 * sqrt(
            treated_conversion_rate * (1 - treated_conversion_rate) / sent_count
            + held_out_conversion_rate * (1 - held_out_conversion_rate) / held_out_count
        ) as uplift_ci_upper
    from rates
)

select * from final

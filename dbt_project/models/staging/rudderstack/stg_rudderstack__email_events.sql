{{ config(indexes=postgres_indexes([['message_id'], ['received_at']])) }}

{%- set email_events = {
    'Email Sent': 'sent',
    'Email Delivered': 'delivered',
    'Email Opened': 'opened',
    'Email Link Clicked': 'clicked',
    'Email Bounced': 'bounced',
    'Email Rejected': 'rejected',
    'Marked as Spam': 'complained',
    'Unsubscribed': 'unsubscribed',
} -%}

with

source as (
    {{ deduplicated_source(
        'rudderstack', 'tracks',
        where="raw_events.event in ('" ~ email_events.keys() | join("', '") ~ "')"
    ) }}
),

renamed as (
    select
        message_id,
        event as event_name,
        case event
            {%- for name, kind in email_events.items() %}
            when '{{ name }}' then '{{ kind }}'
            {%- endfor %}
        end as email_event_type,
        anonymous_id,
        coalesce(user_id, {{ json_text('properties', ['user_id']) }}) as user_id,
        {{ event_time('source') }} as event_at,
        original_timestamp,
        received_at,
        {{ json_text('properties', ['trigger_id']) }} as trigger_id,
        {{ json_text('properties', ['campaign']) }} as campaign,
        {{ json_text('properties', ['variant']) }} as variant,
        {{ json_text('properties', ['mandrill_id']) }} as mandrill_id,
        nullif(lower(trim({{ json_text('properties', ['email']) }})), '') as email,
        {{ json_text('properties', ['url']) }} as clicked_url,
        lower({{ json_text('properties', ['bounce_type']) }}) as bounce_type,
        lower({{ json_text('properties', ['reject_reason']) }}) as reject_reason,
        -- who sent it: only the signed Mandrill webhook's events suppress (the collector
        -- refuses its library name on every other route). As sent, not lower-cased: the
        -- collector refuses any casing of the name, and a lower() that folds a character
        -- Python does not (a dotted capital I) would let a variant through. '' when absent,
        -- so that null means a row staged before this column existed
        coalesce({{ json_text('context', ['library', 'name']) }}, '') as library_name
    from source
)

select * from renamed
{{ full_build_order('received_at') }}

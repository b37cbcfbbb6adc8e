{{ config(indexes=postgres_indexes([['message_id'], ['received_at'], ['anonymous_id']])) }}

with

source as (
    {{ deduplicated_source('rudderstack', 'identifies') }}
),

renamed as (
    select
        message_id,
        anonymous_id,
        user_id,
        {{ event_time('source') }} as event_at,
        original_timestamp,
        received_at,
        nullif(lower(trim({{ identify_trait('email') }})), '') as email,
        nullif(trim({{ identify_trait('first_name') }}), '') as first_name,
        nullif(trim(coalesce({{ identify_trait('timezone') }}, context_timezone)), '') as timezone,
        nullif(trim(coalesce({{ identify_trait('locale') }}, context_locale)), '') as locale,
        {{ text_to_boolean(identify_trait('email_opt_in')) }} as email_opt_in
    from source
)

select * from renamed
{{ full_build_order('received_at') }}

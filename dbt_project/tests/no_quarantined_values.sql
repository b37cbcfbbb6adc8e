{{ config(severity='warn', tags=['nightly']) }}

{#-
    Warns (never fails: one shop's broken or hostile client must not stop the nightly build)
    with the number of client values staging set aside. Look at `quarantined_values`.
-#}

select * from {{ ref('quarantined_values') }}

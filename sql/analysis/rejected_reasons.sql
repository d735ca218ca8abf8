-- rejected_reasons.sql: why rows did not make it into the published data, by count.
--
-- Two stages drop rows: `rejected` (bad input that never reached the teacher: empty or
-- non-string text, unknown labels, malformed records) and `filtered` (well-formed rows that
-- were dropped on purpose: duplicates, test-split overlap, curation filters such as
-- low_confidence or label_cap). Both are listed, with the stage that dropped them.
--
-- Input:  views `rejected` and `filtered`.
-- Output: one row per (stage, reason):
--           stage ('rejected' or 'filtered'), reason, n, share_of_stage (n / rows the stage
--           dropped), sources (the distinct sources, comma-separated), example (the smallest
--           input_ref for rejected rows, the smallest id for filtered rows)
--         ordered by stage (rejected first), n descending, reason.
-- Parameters: none.

with

dropped as (

    select 'rejected' as stage, reason, source, input_ref as example
    from rejected
    union all
    select 'filtered' as stage, filter_reason as reason, source, id as example
    from filtered

),

per_reason as (

    select
        stage,
        reason,
        count(*) as n,
        string_agg(distinct source, ', ' order by source) as sources,
        min(example) as example
    from dropped
    group by stage, reason

),

final as (

    select
        stage,
        reason,
        n,
        n / sum(n) over (partition by stage) as share_of_stage,
        sources,
        example
    from per_reason
    order by stage <> 'rejected', n desc, reason

)

select * from final

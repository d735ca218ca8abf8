-- curate.sql: decide, for every staged row, whether it is published or filtered, and why.
--
-- Input:  view `staged` with the contract.SCORED_SCHEMA columns (extra columns pass through).
-- Output: EVERY staged row, its columns unchanged, plus `filter_reason`:
--           null             the row is published
--           'low_confidence' a non-seed row whose teacher_confidence < $min_confidence
--           'label_cap'      a non-seed row beyond the first $max_per_label rows of its label,
--                            ranked by teacher_confidence desc, then id (ties broken stably)
--         ordered by id, so the same staged rows always give the same output.
-- Parameters (bound by name, never formatted into this text):
--   $min_confidence  DOUBLE in [0, 1]
--   $max_per_label   INTEGER >= 1, or NULL for no cap
-- Seed (gold) rows are always kept and do not use up a label's cap: they are the few
-- human-labelled rows the student most needs. The cap ranks only rows that passed the
-- confidence filter, so it keeps the best k survivors rather than counting dropped rows.

with

scored as (

    select * from staged

),

confidence_checked as (

    select
        *,
        -- compare in the column's float32: 0.7 stored as float32 is not below a 0.7 threshold
        source <> 'seed'
            and teacher_confidence < cast($min_confidence as float) as is_low_confidence

    from scored

),

cap_candidates as (

    select
        *,
        source <> 'seed' and not is_low_confidence as is_cap_candidate

    from confidence_checked

),

ranked as (

    -- partitioning by is_cap_candidate as well keeps seed and low-confidence rows from
    -- taking places in the ranking of the rows the cap applies to
    select
        *,
        row_number() over (
            partition by label, is_cap_candidate
            order by teacher_confidence desc, id
        ) as label_rank

    from cap_candidates

),

final as (

    select
        * exclude (is_low_confidence, is_cap_candidate, label_rank),
        case
            when source = 'seed' then null
            when is_low_confidence then 'low_confidence'
            when is_cap_candidate
                and $max_per_label is not null
                and label_rank > $max_per_label then 'label_cap'
        end as filter_reason

    from ranked
    order by id

)

select * from final

-- teacher_gold_disagreement.sql: how often the teacher disagrees with the human label on seed rows.
--
-- Seed rows are the only rows with a gold (human) label, so they are where the teacher's
-- pseudo-labels can be checked. A high rate for one gold label points at a class the teacher
-- (or its verbaliser) gets wrong; a high mean confidence when wrong means its confidence
-- cannot be trusted as a filter for that class.
--
-- Input:  view `data` (published rows); only source = 'seed' rows with a gold_label count.
-- Output: one row per gold label, then a total row with gold_label = '(all)' (omitted when
--         there are no seed rows):
--           gold_label, n, disagreements (teacher_label <> gold_label),
--           disagreement_rate (disagreements / n),
--           mean_confidence_when_wrong (mean teacher_confidence of the disagreements; null if none)
--         ordered by gold_label, the total last.
-- Parameters: none.

with

seed as (

    select gold_label, teacher_label, cast(teacher_confidence as double) as teacher_confidence
    from data
    where source = 'seed' and gold_label is not null

),

compared as (

    select *, teacher_label <> gold_label as is_disagreement
    from seed

),

per_label as (

    select
        gold_label,
        count(*) as n,
        count(*) filter (where is_disagreement) as disagreements,
        avg(teacher_confidence) filter (where is_disagreement) as mean_confidence_when_wrong
    from compared
    group by gold_label

),

overall as (

    select
        '(all)' as gold_label,
        count(*) as n,
        count(*) filter (where is_disagreement) as disagreements,
        avg(teacher_confidence) filter (where is_disagreement) as mean_confidence_when_wrong
    from compared
    having count(*) > 0

),

final as (

    select
        gold_label,
        n,
        disagreements,
        disagreements / n as disagreement_rate,
        mean_confidence_when_wrong
    from (select * from per_label union all select * from overall)
    order by gold_label = '(all)', gold_label

)

select * from final

-- confusion_matrix.sql: gold label x teacher label counts on the seed rows, in long form.
--
-- Every (gold, teacher) pair of the manifest's labels gets a row, zeros included, so the
-- matrix is complete even for a label the teacher never predicts. Pivot it for display with
--   pivot (<this query>) on teacher_label using sum(n) group by gold_label
--
-- Input:  views `data` (published rows; seed rows with a gold_label count) and `manifest`
--         (its `labels` list gives the label order).
-- Output: one row per (gold_label, teacher_label) pair of manifest labels:
--           gold_label, teacher_label, n (seed rows with that gold and teacher label),
--           share_of_gold (n / seed rows with that gold label; null when that gold label has
--           no seed rows)
--         ordered by the manifest's label order, gold first.
-- Parameters: none.

with

labels as (

    select labels[i] as label, i as position
    from manifest, range(1, len(labels) + 1) as t(i)

),

seed as (

    select gold_label, teacher_label
    from data
    where source = 'seed' and gold_label is not null

),

counted as (

    select gold_label, teacher_label, count(*) as n
    from seed
    group by gold_label, teacher_label

),

cells as (

    select
        gold.label as gold_label,
        teacher.label as teacher_label,
        gold.position as gold_position,
        teacher.position as teacher_position
    from labels as gold
    cross join labels as teacher

),

final as (

    select
        cells.gold_label,
        cells.teacher_label,
        coalesce(counted.n, 0) as n,
        coalesce(counted.n, 0)
            / nullif(sum(coalesce(counted.n, 0)) over (partition by cells.gold_label), 0)
            as share_of_gold
    from cells
    left join counted
        on counted.gold_label = cells.gold_label
        and counted.teacher_label = cells.teacher_label
    order by cells.gold_position, cells.teacher_position

)

select * from final

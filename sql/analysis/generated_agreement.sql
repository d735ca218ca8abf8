-- generated_agreement.sql: do generated examples carry the label they were generated for?
--
-- The generation stage writes each new example conditioned on a label (the optional contract
-- column `intended_label`); the teacher then labels it like any corpus row. Agreement between
-- the intended label and the teacher's label measures how well the generator follows the
-- label; the corpus columns put the teacher's confidence on generated rows next to its
-- confidence on real corpus rows of the same label (generated text that is much "easier"
-- than the corpus teaches the student little).
--
-- Both published and curated-out (filtered) rows that the teacher scored count, so a
-- confidence filter does not hide disagreements.
-- Works on every version: when `intended_label` does not exist (the generation stage was off
-- or predates the column) it is added as null, and generated rows without an intended label
-- are left out, so the query returns zero rows.
--
-- Input:  views `data` and `filtered`.
-- Output: one row per intended label of the generated rows:
--           label, generated_n, generated_agree (teacher_label = intended_label),
--           agreement_rate, generated_mean_confidence,
--           corpus_n (corpus rows the teacher gave this label), corpus_mean_confidence
--         ordered by label.
-- Parameters: none.

with

published as (

    -- UNION ALL BY NAME fills a column one side lacks with NULL: this adds intended_label
    -- when the version has none, and keeps it as it is when it does.
    select * from data
    union all by name
    select cast(null as varchar) as intended_label where false

),

curated_out as (

    select * exclude (filter_reason) from filtered
    where teacher_label is not null
    union all by name
    select cast(null as varchar) as intended_label where false

),

scored as (

    select
        source, intended_label, teacher_label,
        cast(teacher_confidence as double) as teacher_confidence
    from (select * from published union all by name select * from curated_out)

),

generated as (

    select
        intended_label as label,
        count(*) as generated_n,
        count(*) filter (where teacher_label = intended_label) as generated_agree,
        avg(teacher_confidence) as generated_mean_confidence
    from scored
    where source = 'generated' and intended_label is not null
    group by intended_label

),

corpus as (

    select teacher_label as label, count(*) as corpus_n,
           avg(teacher_confidence) as corpus_mean_confidence
    from scored
    where source = 'corpus'
    group by teacher_label

),

final as (

    select
        generated.label,
        generated.generated_n,
        generated.generated_agree,
        generated.generated_agree / generated.generated_n as agreement_rate,
        generated.generated_mean_confidence,
        coalesce(corpus.corpus_n, 0) as corpus_n,
        corpus.corpus_mean_confidence
    from generated
    left join corpus using (label)
    order by generated.label

)

select * from final

-- confidence_by_class.sql: the distribution of teacher confidence per teacher label (quantiles).
--
-- A label whose confidence sits far below the others is one the curation threshold removes
-- disproportionately (compare with filtered.parquet), or one the teacher finds hard.
--
-- Input:  view `data` (published rows).
-- Output: one row per teacher_label:
--           teacher_label, n, min, p10, p25, median, p75, p90, max, mean
--         (continuous quantiles of teacher_confidence), ordered by teacher_label.
-- Parameters (bound by name; `potstill query ... --param source=corpus`):
-- @param $source = null   only rows of this source (seed, corpus or generated); null = all rows

with

scored as (

    select teacher_label, cast(teacher_confidence as double) as confidence
    from data
    where $source is null or source = $source

),

final as (

    select
        teacher_label,
        count(*) as n,
        min(confidence) as min,
        quantile_cont(confidence, 0.10) as p10,
        quantile_cont(confidence, 0.25) as p25,
        quantile_cont(confidence, 0.50) as median,
        quantile_cont(confidence, 0.75) as p75,
        quantile_cont(confidence, 0.90) as p90,
        max(confidence) as max,
        avg(confidence) as mean
    from scored
    group by teacher_label
    order by teacher_label

)

select * from final

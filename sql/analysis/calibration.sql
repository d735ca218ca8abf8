-- calibration.sql: is the teacher's confidence a probability? Calibration table and ECE on seed rows.
--
-- Each seed row's teacher_confidence (max label probability) falls in one of $buckets
-- equal-width buckets over [0, 1]: bucket b holds (b/$buckets, (b+1)/$buckets], bucket 0 also
-- holds 0 (the same rule as potstill.models.metrics.expected_calibration_error, so with 10 buckets
-- `ece` equals the manifest's teacher_audit.ece). A row is correct when teacher_label =
-- gold_label. ECE = sum over buckets of n/N * |accuracy - mean_confidence|. This is the
-- table behind the report's reliability diagram.
--
-- Input:  view `data` (published rows); only source = 'seed' rows with a gold_label count.
-- Output: one row per bucket, empty buckets included (n = 0, averages null):
--           bucket (0-based), lower, upper, n, mean_confidence, accuracy,
--           gap (accuracy - mean_confidence; negative = over-confident),
--           ece (the same value on every row; null when there are no seed rows)
--         ordered by bucket.
-- Parameters (bound by name; `potstill query ... --param buckets=5`):
-- @param $buckets = 10   number of buckets, an integer >= 1

with

params as (

    select case when $buckets >= 1 then cast($buckets as integer)
                else error('calibration.sql: $buckets must be an integer >= 1') end as buckets

),

seed as (

    select
        cast(teacher_confidence as double) as confidence,
        cast(teacher_label = gold_label as double) as correct
    from data
    where source = 'seed' and gold_label is not null

),

bucketed as (

    select
        seed.*,
        greatest(least(cast(ceil(confidence * buckets) as integer) - 1, buckets - 1), 0) as bucket
    from seed
    cross join params

),

per_bucket as (

    select bucket, count(*) as n, avg(confidence) as mean_confidence, avg(correct) as accuracy
    from bucketed
    group by bucket

),

all_buckets as (

    select cast(b as integer) as bucket, b / buckets as lower, (b + 1) / buckets as upper
    from params, range(0, buckets) as t(b)

),

final as (

    select
        all_buckets.bucket,
        all_buckets.lower,
        all_buckets.upper,
        coalesce(per_bucket.n, 0) as n,
        per_bucket.mean_confidence,
        per_bucket.accuracy,
        per_bucket.accuracy - per_bucket.mean_confidence as gap,
        sum(per_bucket.n * abs(per_bucket.accuracy - per_bucket.mean_confidence)) over ()
            / (select nullif(count(*), 0) from seed) as ece
    from all_buckets
    left join per_bucket using (bucket)
    order by all_buckets.bucket

)

select * from final

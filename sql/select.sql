-- select.sql: LLKD selection and teaching-assistant weighting over the signals columns.
--
-- Input:  view `staged` with the contract columns and the signals columns (signals.enabled):
--         student_entropy, student_consistency, ta_teacher_confidence, ta_student_confidence,
--         selection_round. Extra columns pass through.
-- Output: EVERY staged row, `weight` recomputed, plus `filter_reason`:
--           null                      the row is published
--           'llkd_teacher_unsure'     teacher_confidence below its class's threshold
--           'llkd_student_confident'  the student's need below its class's threshold
--         ordered by id. Seed (gold) rows are always kept with weight 1.
-- Parameters (bound by name, never formatted into this text):
--   $llkd, $ta_weighting   BOOLEAN: switch each method on or off
--   $confidence_scale      DOUBLE >= 0: teacher threshold = scale x class average
--   $need_scale            DOUBLE >= 0: need threshold = scale x class average (0 = off)
--   $momentum              DOUBLE in [0, 1): weight of earlier rounds in the class averages
--   $weight_floor          DOUBLE in [0, 1]: the smallest TA weight
--   $n_labels              INTEGER >= 2: normalises the entropy
--
-- LLKD (arXiv 2411.08028): keep rows the teacher is confident about AND the student still
-- needs, with thresholds that adapt per class c (the teacher's label) and budget round r:
--   need                = student_entropy / ln($n_labels), in [0, 1]
--   mean_conf(c, r)     = mean teacher_confidence of class c's pool rows of round r
--   avg_conf(c, r)      = moving average over rounds: avg(1) = mean(1),
--                         avg(r) = momentum * avg(r - 1) + (1 - momentum) * mean(r)
--                         (rounds where class c has no rows are skipped, weights renormalised)
--   avg_need(c, r)      = the same for need
--   keep iff teacher_confidence >= $confidence_scale * avg_conf(c, r)
--        and need               >= $need_scale * avg_need(c, r)
-- A class the teacher is generally unsure of gets a lower bar than an easy one (per-label
-- adjustment), so selection does not starve the hard classes.
--
-- TA weighting (arXiv 2406.05322), three signals per pool row, each in [0, 1]:
--   trust  = percent rank of ta_teacher_confidence among pool rows with the same teacher_label
--   doubt  = 1 - percent rank of ta_student_confidence among pool rows with the same student_label
--   unsure = 1 - student_consistency
--   weight = $weight_floor + (1 - $weight_floor) * (trust + doubt + unsure) / 3
-- Ranking within a class removes a small TA's bias towards one label. A missing TA signal
-- counts as 0.5 (neutral); a missing student signal as 0 (no extra need).

with

staged_rows as (

    select * from staged

),

with_need as (

    select
        *,
        student_entropy / ln(cast($n_labels as double)) as need,
        coalesce(selection_round, 1) as round

    from staged_rows

),

class_round as (

    select
        teacher_label as class,
        round,
        avg(teacher_confidence) as mean_conf,
        avg(need) as mean_need,
        min(round) over (partition by teacher_label) as first_round

    from with_need
    where source <> 'seed'
    group by teacher_label, round

),

ema_terms as (

    select
        cur.class,
        cur.round,
        past.mean_conf,
        past.mean_need,
        case
            when past.round = past.first_round then pow($momentum, cur.round - past.round)
            else (1 - $momentum) * pow($momentum, cur.round - past.round)
        end as w

    from class_round as cur
    join class_round as past
        on past.class = cur.class and past.round <= cur.round

),

thresholds as (

    select
        class,
        round,
        sum(w * mean_conf) / sum(w) as avg_conf,
        sum(w * mean_need) / sum(w) as avg_need

    from ema_terms
    group by class, round

),

llkd as (

    select
        r.*,
        -- compare in the column's float32, as curate.sql does
        r.teacher_confidence < cast($confidence_scale * t.avg_conf as float) as teacher_unsure,
        coalesce(r.need < $need_scale * t.avg_need, false) as student_confident

    from with_need as r
    left join thresholds as t
        on t.class = r.teacher_label and t.round = r.round

),

ta as (

    select
        *,
        case when ta_teacher_confidence is null then 0.5 else
            percent_rank() over (
                partition by source = 'seed', ta_teacher_confidence is null, teacher_label
                order by ta_teacher_confidence
            )
        end as trust,
        case when ta_student_confidence is null then 0.5 else
            1 - percent_rank() over (
                partition by source = 'seed', ta_student_confidence is null, student_label
                order by ta_student_confidence
            )
        end as doubt,
        1 - coalesce(student_consistency, 1) as unsure

    from llkd

),

final as (

    select
        * exclude (need, round, teacher_unsure, student_confident, trust, doubt, unsure, weight),
        case
            when source = 'seed' or not $ta_weighting then weight
            else $weight_floor + (1 - $weight_floor) * (trust + doubt + unsure) / 3
        end as weight,
        case
            when source = 'seed' or not $llkd then null
            when teacher_unsure then 'llkd_teacher_unsure'
            when student_confident then 'llkd_student_confident'
        end as filter_reason

    from ta
    order by id

)

select * from final

-- budget.sql: which pool rows the teacher scores in this round, when teacher calls are budgeted.
--
-- Input:  view `candidates` (id, student_label, student_entropy, student_consistency): the pool
--         rows the teacher has not scored yet, with the current student's signals (the signal
--         columns are null when the student did not run, e.g. strategy 'random' without signals).
-- Output: at most $n rows (id, priority, class_turn), in the order they were picked.
-- Parameters (bound by name, never formatted into this text):
--   $n          INTEGER >= 0, the teacher calls this round may spend
--   $strategy   'need' or 'random'
--   $seed       INTEGER, for the random strategy's lottery
--   $n_labels   INTEGER >= 2, to normalise the entropy
--
-- need:   priority = (student_entropy / ln($n_labels) + (1 - student_consistency)) / 2, in [0, 1]:
--         LLKD's information need and TA-in-the-loop's student (in)consistency. Per-class
--         adjustment: rows are ranked within their predicted class and the classes take turns
--         (every class's neediest row, then every class's second, ...), so one confusing class
--         can not take the whole budget. Rows without signals come last.
-- random: every row has the same turn; order is a seeded hash of the id (the baseline).

with

pool as (

    select * from candidates

),

priorities as (

    select
        id,
        student_label,
        case when $strategy = 'need'
            then (student_entropy / ln(cast($n_labels as double)) + (1 - student_consistency)) / 2
        end as priority,
        md5(id || ':' || cast($seed as varchar)) as lottery

    from pool

),

turns as (

    select
        *,
        case
            when $strategy <> 'need' then 1
            when priority is not null then row_number() over (
                partition by student_label
                order by priority desc nulls last, id
            )
        end as class_turn

    from priorities

),

final as (

    select id, priority, class_turn
    from turns
    order by class_turn nulls last, priority desc nulls last, lottery
    limit $n

)

select * from final

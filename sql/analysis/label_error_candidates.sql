-- label_error_candidates.sql: rows whose label deserves a second look, with the reason why.
--
-- Two kinds of candidate:
--   confident_disagreement  a seed row whose teacher_label differs from its gold_label while
--                           teacher_confidence >= $min_confidence: either the human label is
--                           wrong or the teacher is confidently wrong (both worth knowing).
--   low_margin              any published row whose teacher_margin (top-1 minus top-2
--                           probability) is below $max_margin: the teacher barely chose; on
--                           non-seed rows the training label is close to a coin flip.
-- A row can appear once per kind. For cleanlab's confident-learning ranking of the seed rows
-- see `potstill label-issues`.
--
-- Input:  view `data` (published rows).
-- Output: reason, id, source, label, gold_label, teacher_label, teacher_confidence,
--         teacher_margin, text; ordered by reason, then most confident disagreement / smallest
--         margin first, then id.
-- Parameters (bound by name; `potstill query ... --param min_confidence=0.9`):
-- @param $min_confidence = 0.8   DOUBLE in [0, 1]
-- @param $max_margin = 0.15      DOUBLE in [0, 1]

with

published as (

    select
        id, source, label, gold_label, teacher_label, text,
        cast(teacher_confidence as double) as teacher_confidence,
        cast(teacher_margin as double) as teacher_margin
    from data

),

confident_disagreements as (

    select 'confident_disagreement' as reason, *, -teacher_confidence as rank_key
    from published
    where source = 'seed'
        and gold_label is not null
        and teacher_label <> gold_label
        and teacher_confidence >= $min_confidence

),

low_margins as (

    select 'low_margin' as reason, *, teacher_margin as rank_key
    from published
    where teacher_margin < $max_margin

),

final as (

    select
        reason, id, source, label, gold_label, teacher_label, teacher_confidence,
        teacher_margin, text
    from (select * from confident_disagreements union all select * from low_margins)
    order by reason, rank_key, id

)

select * from final

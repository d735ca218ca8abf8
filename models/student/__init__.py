"""The student and its training: `student` (encoder, pooling, head), `trainer` (fine-tuning and
the test split; `python -m potstill.models.student.trainer`), `head` (frozen encoder), `losses`,
`llkd` (selection in the loop), `data` (what the trainer reads), `signals` (student and TA
signals), `rationale_input`, `hf_export`. The top room: may import every other room.
"""

"""Durable jobs' queue rules that sit beside node/durable.py: how a job is named (`ids`) and how
each tenant's job id runs once in its window (`claims`)."""

from .claims import CLAIMS_PREFIX, CLAIMS_STREAM, Claims, claims_stream_config, claim_subject
from .ids import JOB_ID, JOB_ID_RE, MSG_ID, STREAM_DUPLICATE_WINDOW_S, ConflictingIds, job_id_of, valid_job_id
from .jetstream import EXPECTED_LAST_SUBJECT_SEQ, NO_MESSAGE_FOUND, WRONG_LAST_SEQUENCE

__all__ = [
    "CLAIMS_PREFIX", "CLAIMS_STREAM", "Claims", "claims_stream_config", "claim_subject",
    "JOB_ID", "JOB_ID_RE", "MSG_ID", "STREAM_DUPLICATE_WINDOW_S", "ConflictingIds", "job_id_of", "valid_job_id",
    "EXPECTED_LAST_SUBJECT_SEQ", "NO_MESSAGE_FOUND", "WRONG_LAST_SEQUENCE",
]

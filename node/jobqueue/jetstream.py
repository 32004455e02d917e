"""The JetStream header and error codes the job queue's exactly-once checks rely on."""

EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
WRONG_LAST_SEQUENCE = 10071  # JetStream err_code of a failed expected-last-sequence check
NO_MESSAGE_FOUND = 10037  # JetStream err_code of a get for a subject with no message

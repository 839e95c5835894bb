"""The limits of what a job may state: one source for the API's serializers, the specs' checks
(jobs/specs.py, which also guard the engine's own producers) and the documentation.

The model's column sizes (jobs/models.py) are the database's side of the same numbers.
"""

QUEUE_NAME_MAX_LENGTH = 100
JOB_TYPE_MAX_LENGTH = 200
PRIORITY_MIN, PRIORITY_MAX, PRIORITY_DEFAULT = 0, 9, 5
SUB_PRIORITY_MIN, SUB_PRIORITY_MAX = -100, 100
MAX_ATTEMPTS_MIN, MAX_ATTEMPTS_MAX = 1, 1000
TIMEOUT_SECONDS_MIN, TIMEOUT_SECONDS_MAX = 1, 7 * 24 * 3600
DELAY_SECONDS_MAX = 366 * 24 * 3600
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# A failed attempt: its error (the summary line) and the worker's full traceback.
ERROR_MAX_LENGTH = 10_000
TRACEBACK_MAX_LENGTH = 65_536
MAX_TAGS = 20
TAG_MAX_LENGTH = 100
REF_MAX_LENGTH = 100

# Graph limits, checked before anything is written. A job's parents are depends_on and
# depends_on_refs together: every parent is one edge row and one count in pending_parents,
# and a job with thousands of parents is a fan-in better expressed as a batch callback.
MAX_PARENTS_PER_JOB = 100
# Edges of one batch (the sum of its jobs' parents): bounds the rows one submit inserts and
# the work of one failure cascade through the graph.
MAX_EDGES_PER_BATCH = 10_000
# The most items the API parses in one depends_on / depends_on_refs list before the specs
# count parents (MAX_PARENTS_PER_JOB, with a message that names both lists): a bound on the
# parsing work of one request, not a second limit.
PARENT_LIST_PARSE_CAP = 1000

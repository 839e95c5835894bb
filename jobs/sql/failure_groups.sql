-- The latest failures of project %(project_id)s grouped for the dashboard: the newest
-- %(sample)s failed or timed-out attempts that finished in the %(hours)s hours before %(now)s
-- (or now()), grouped by job type and normalised message; the %(groups)s largest groups
-- (most recent first among equals), each with its count, first and last time seen and the
-- job of its newest attempt. Every row also carries how many attempts were looked at, the
-- oldest of them and the clock, so the caller can tell whether a group is new.
-- The message is the error's first non-empty line (of its first 400 characters) with uuids,
-- hex words (0x…, or 8+ hex digits: hashes, addresses, long ids) and numbers not glued to a
-- word ("42", "3.5s", "id=7"; not "v23", "utf8") replaced by <uuid>, <hex>, <n>, runs of
-- spaces collapsed, at most 200 characters.
-- Cost: the regexes are most of it, so they run here (about 3x faster than Python's on the
-- same lines), once per distinct line (identical lines are counted first), and with
-- patterns that avoid lookaheads and never match a lone space (with them, a pass cost 2 to
-- 7 times as much, measured on 1,000 lines).
-- Index: execution_project_failed (project_id, finished_at DESC) WHERE status IN ('failed',
-- 'timed_out'): the LIMIT stops the scan, and only the attempts kept are joined to their
-- jobs (primary key) for the job type.
-- Tenancy: %(project_id)s scopes the executions, and an execution's job is of its project.
-- Concurrency: a plain read.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
-- The window's start is applied after the LIMIT, not in the scan: the planner cannot see a
-- bound computed in a CTE, guessed a few hundred rows in the window, and read and sorted all
-- 22,000 of a busy day instead of walking the index newest first (145 ms against 2 ms).
latest AS MATERIALIZED (
    SELECT e.job_id, left(e.error, 1000) AS error, e.finished_at
    FROM jobs_jobexecution AS e
    WHERE e.project_id = %(project_id)s::uuid
        AND e.status IN ('failed', 'timed_out')
        AND e.finished_at <= (SELECT now FROM clock)
    ORDER BY e.finished_at DESC
    LIMIT %(sample)s
),
newest AS (
    SELECT * FROM latest
    WHERE finished_at >= (SELECT now FROM clock) - %(hours)s::int * interval '1 hour'
),
-- Identical lines are grouped first, so each distinct line goes through the regexes once.
lines AS (
    SELECT j.job_type,
        split_part(left(ltrim(n.error, E' \t\r\n'), 400), E'\n', 1) AS line,
        count(*) AS attempts,
        min(n.finished_at) AS first_seen,
        max(n.finished_at) AS last_seen,
        (array_agg(n.job_id ORDER BY n.finished_at DESC))[1] AS latest_job_id
    FROM newest AS n
    JOIN jobs_job AS j ON j.id = n.job_id
    GROUP BY 1, 2
),
normalised AS (
    SELECT l.*,
        left(btrim(regexp_replace(regexp_replace(regexp_replace(regexp_replace(l.line,
            '\m[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\M',
                '<uuid>', 'gi'),
            '\m0x[0-9a-f]+\M|\m[0-9a-f]{8,}\M', '<hex>', 'gi'),
            '(?<![A-Za-z0-9_])[0-9]+(\.[0-9]+)?', '<n>', 'g'),
            '\s{2,}', ' ', 'g'), E' \t\r\n'), 200) AS message
    FROM lines AS l
)
SELECT job_type, message, sum(attempts)::int, min(first_seen), max(last_seen),
    (array_agg(latest_job_id ORDER BY last_seen DESC))[1],
    (SELECT count(*) FROM newest),
    (SELECT min(finished_at) FROM newest),
    (SELECT now FROM clock)
FROM normalised
GROUP BY job_type, message
ORDER BY sum(attempts) DESC, max(last_seen) DESC, job_type, message
LIMIT %(groups)s

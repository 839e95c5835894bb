-- The time schedules fire by: taskforge_now() (jobs/migrations/0004) is now() unless the
-- session froze it with `SET taskforge.now`, which is how tests move database time.
SELECT taskforge_now()

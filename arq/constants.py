"""Every Redis key prefix and default of arq 0.26.3's wire format, plus the few keys of our own.

The arq names are the contract shared with the published arq: change none of them. Our own additions use prefixes
that arq never reads, so a mixed fleet ignores them safely.
"""

default_queue_name = 'arq:queue'
job_key_prefix = 'arq:job:'
in_progress_key_prefix = 'arq:in-progress:'
result_key_prefix = 'arq:result:'
retry_key_prefix = 'arq:retry:'
abort_jobs_ss = 'arq:abort'
health_check_key_suffix = ':health-check'

# how long a cron job's in-progress key is kept after it ran, to stop a lagging worker enqueueing the same run again
keep_cronjob_progress = 60
# the job key lives this long past the job's planned start
expires_extra_ms = 86_400_000
# arq re-applies this TTL (seconds) to the retry counter on every start
retry_counter_ttl_s = 88_400
# abort requests older than this whose job is neither queued nor running are pruned
abort_entry_max_age_ms = 60_000

# --- our own keys and channels (arq ignores them) ---
# `arq:wake:<queue>`: a list of wake tokens pushed on enqueue; an idle worker blocks on it (BLPOP), so one enqueue wakes
# one worker at once instead of waiting out poll_delay
wake_list_prefix = 'arq:wake:'
# PUBLISHed when a job finishes so Job.result() wakes without polling
job_done_channel_prefix = 'arq:done:'
# how many times a worker process died while holding this job (written by the supervisor)
job_deaths_key_prefix = 'arq:deaths:'
# one per claim lane of a worker (`arq:claim:<worker id>`, and `...:lane1` for its second lane, arq.claimer): the
# lane's last claim's token and ids, kept for one lease so a worker whose claim reply was lost can take them back;
# deleted when the worker closes
claim_record_prefix = 'arq:claim:'
# `arq:recent:<queue>:complete` and `...:failed`: sorted sets of recently finished job ids (score: finish time in ms),
# capped and expiring; written only by workers given `recent_outcomes` (arq-supervise's children), read by the dashboard
recent_outcomes_key_prefix = 'arq:recent:'
recent_outcomes_ttl_ms = 3_600_000
# per-supervisor health detail
supervisor_key_prefix = 'arq:supervisor:'

# lease on the in-progress key while a job runs (Worker lease_s; arq-supervise has its own default, --lease)
default_lease_s = 12.0
# a lease is renewed this many times over its length, so it outlives two missed renewals: a worker renews every
# lease/3 from its event loop (arq.leases), and arq-supervise's parent, which renews once a second, accepts no lease
# shorter than three seconds
lease_renewals = 3

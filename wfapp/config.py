"""Default configuration; `instance/config.py` and `WFAPP_*` environment variables override it."""

from __future__ import annotations

# SECRET_KEY has no default on purpose: create_app() refuses to start without one outside tests.
SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
# Unset: the embedded queue (in-process worker, for one machine). Set: redis://host:6379/0.
REDIS_URL = None
# Bootstrap's CSS and JS come from the package, never from a CDN: wfapp runs on closed networks.
BOOTSTRAP_SERVE_LOCAL = True
BOOTSTRAP_BOOTSWATCH_THEME = None
WTF_CSRF_TIME_LIMIT = None
# Extra plugin modules to register by dotted name, besides the `wfapp` entry points
# (environment: WFAPP_PLUGINS='["my_plugin"]' or WFAPP_PLUGINS=my_plugin,other_plugin).
PLUGINS: list[str] = []
# Load the plugins installed under the `wfapp` entry-point group (the tests turn this off).
LOAD_ENTRY_POINTS = True
# The address people and senders reach this app at, e.g. https://wfapp.example.com; used for
# webhook URLs on the cards and the Business Central notification URL. Unset: the request's.
EXTERNAL_URL = ""
# How many reverse proxies in front of the app set X-Forwarded-For/-Proto/-Host. 0 trusts
# none of those headers: the client address is the TCP peer.
TRUSTED_PROXIES = 0
# Key(s) that encrypt integration secrets at rest (Fernet; comma-separated, the first encrypts).
# Unset: derived from SECRET_KEY.
SECRETS_KEY = None
# Largest request body accepted (run uploads of 100,000 records fit); larger ones answer 413.
MAX_CONTENT_LENGTH = 64 * 1024 * 1024
# Rows per page in lists.
PAGE_SIZE = 50
# Run queued jobs in a thread of the web process (the embedded queue; `make run` turns it on).
EMBEDDED_WORKER = False
# With the embedded worker, run the jobs in one child process that is killed and replaced when a
# job runs past JOB_TIMEOUT (a plugin whose code never returns). False: in a thread of the web
# process, as before, with no job timeout (an in-memory SQLite database always runs them there).
EMBEDDED_ISOLATION = True
# Seconds between timeout sweeps (which also re-queue pending events that lost their job).
SWEEP_INTERVAL = 10
# A worker's claim on an inbox partition expires after this many seconds unless renewed.
LEASE_SECONDS = 60
# Events handled per database transaction.
EVENT_BATCH_SIZE = 200
# Inbox partitions a worker leases at once; their events share batches (a partition alone
# often holds fewer events than a batch).
EVENT_PARTITIONS_PER_BATCH = 8
# Seconds one processing or sweep job works before handing over to a fresh job.
JOB_TIME_BUDGET = 20
# Seconds one slice of a bulk operation works before queueing the next slice.
BULK_TIME_BUDGET = 5
# Rows a bulk operation acts on per transaction (cancel and progress take effect per chunk).
BULK_CHUNK = 500
# The sweep gives an unfinished bulk operation a new job at most this often (a lost job).
BULK_RESUME_SECONDS = 120
# Seconds between evaluations of the alert rules.
ALERT_INTERVAL = 60
# A job that runs longer than this many seconds is stopped (an event stuck in a plugin's code):
# RQ kills its work horse, the embedded queue its worker process.
JOB_TIMEOUT = 120
# An event whose processing crashed or ran out of time this many times is marked failed (with
# the reason) instead of being tried again, so it never blocks its partition or the workers.
MAX_EVENT_ATTEMPTS = 3
# The demo's stand-in fulfilment API (/demo/fulfilment/…, `make run` turns it on) and the share
# of its answers that are a 503 with Retry-After, so retries show.
DEMO_RECEIVER = False
DEMO_RECEIVER_FLAKY = 0.2
# The demo's simulated feed: an import run into SHOP_ORDERS every this many seconds (0 = off).
DEMO_FEED_INTERVAL = 0
# Scheduled polls: request threads per worker process (each integration is also held to its
# own Poll Concurrency setting), and the largest response body a poll accepts.
POLL_CONCURRENCY = 32
POLL_MAX_RESPONSE_BYTES = 1024 * 1024
# Polls yield to other events: while this many events of other sources wait in the inbox (0 =
# never yield), each process starts no new poll (or at most POLL_YIELD_CONCURRENCY at once),
# until fewer than half as many wait; a yield longer than POLL_YIELD_MAX_SECONDS lets one poll
# at a time through. A poll is a pull the product may time; an event is a push someone waits
# for, and on a small machine both compete for the same CPU.
POLL_YIELD_BACKLOG = 100
POLL_YIELD_CONCURRENCY = 0
POLL_YIELD_MAX_SECONDS = 30
# Transition actions (the outbox): delivery threads per worker process, deliveries running at
# once per integration (across processes), seconds between checks for due deliveries, the lease
# (visibility timeout) after which a delivery whose worker died is taken again, and the capped
# exponential backoff between attempts (seconds; jittered; a Retry-After answer wins). A
# delivery's integration settings and secrets may be up to ACTION_CONFIG_SECONDS old when they
# were changed in another process (the per-process configuration cache).
ACTION_THREADS = 8
ACTION_CONCURRENCY_PER_INTEGRATION = 4
# Deliveries yield to the inbox like polls: while at least ACTION_YIELD_BACKLOG events (other
# than action results) wait to be applied (0: never yield), each process runs at most
# ACTION_YIELD_CONCURRENCY deliveries at once, until fewer than half of that wait.
ACTION_YIELD_BACKLOG = 100
ACTION_YIELD_CONCURRENCY = 2
# Seconds between the GIL hand-overs a worker process asks of a busy thread (Python's default
# is 0.005): its delivery and poll threads get the GIL back sooner after each network wait.
WORKER_SWITCH_INTERVAL = 0.001
ACTION_INTERVAL = 2
ACTION_LEASE_SECONDS = 120
ACTION_BACKOFF_BASE = 2.0
ACTION_BACKOFF_CAP = 600.0
ACTION_CONFIG_SECONDS = 2.0
# SMTP for the send_email action (unset host: send_email fails with that reason).
SMTP_HOST = None
SMTP_PORT = 25
SMTP_FROM = "wfapp@localhost"
SMTP_USERNAME = None
SMTP_PASSWORD = None
SMTP_STARTTLS = False

# --- sessions and log-in -------------------------------------------------------------------------
# A session ends after this many minutes without a request (the user logs in again).
SESSION_IDLE_MINUTES = 60
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
# The session cookie is marked Secure whenever the request came over HTTPS (directly, or through
# TRUSTED_PROXIES that set X-Forwarded-Proto); True forces it, e.g. behind a proxy you do not
# list in TRUSTED_PROXIES.
SESSION_COOKIE_SECURE = False
# Failed log-ins allowed per account and per client address, and failed API-token checks per
# client address, in a moving window (the `limits` notation); past it the account or address
# is locked out until the window has moved on.
LOGIN_LIMIT_ACCOUNT = "10 per 15 minutes"
LOGIN_LIMIT_ADDRESS = "50 per 15 minutes"
TOKEN_LIMIT_ADDRESS = "30 per 1 minute"
# Size limits of a workflow definition, enforced on import, API and forms alike; the defaults
# are in wfapp/engine/rules.py (Limits): states 200, transitions 500, conditions 50 and captures
# 50 per transition, condition values 1000 characters, list values 500 items, paths 200.
DEFINITION_LIMITS: dict[str, int] = {}

# --- operations ----------------------------------------------------------------------------------
# GET /metrics: open to these client addresses (CIDRs; a list, or comma-separated in the
# environment), and to any client sending `Authorization: Bearer <METRICS_TOKEN>` when set.
# The default lets a Prometheus on the same host scrape; behind a proxy, list its address.
METRICS_ALLOW: list[str] = ["127.0.0.1/32", "::1/128"]
METRICS_TOKEN = ""
# Seconds one process reuses the figures it read from the database for /metrics.
METRICS_CACHE_SECONDS = 10
# Retention (0 = keep forever): processed events older than this many days, and finished
# instances (with their history) that finished longer ago, are purged by the scheduler in
# batches of RETENTION_BATCH rows. Active instances and their history are never purged.
RETENTION_EVENT_DAYS = 0
RETENTION_INSTANCE_DAYS = 0
RETENTION_BATCH = 1000
# Seconds between retention runs (which also roll up the transition tally of finished days).
RETENTION_INTERVAL = 3600

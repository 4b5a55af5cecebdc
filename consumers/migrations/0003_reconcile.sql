-- Where each reconciliation poller got to, so a restart resumes there.
CREATE TABLE reconcile_cursors (
    poller     text PRIMARY KEY,
    cursor     text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Spend per budget scope and period, so budgets with a duration compare this period's spend
-- (a period starts at anchor + k x duration; lifetime budgets use period 0). Written by the
-- ledger in the same transaction as the spend records it sums.
CREATE TABLE budget_spend (
    scope           TEXT NOT NULL,
    scope_id        TEXT NOT NULL,
    period_start_us BIGINT NOT NULL,
    spend_nanos     BIGINT NOT NULL,
    PRIMARY KEY (scope, scope_id, period_start_us)
);

-- Who a call's spend landed on, for reports and filters.
ALTER TABLE spend_logs ADD COLUMN user_id TEXT;
ALTER TABLE spend_logs ADD COLUMN team_id TEXT;
ALTER TABLE spend_logs ADD COLUMN organization_id TEXT;
ALTER TABLE spend_logs ADD COLUMN tags TEXT;
CREATE INDEX spend_logs_user ON spend_logs (user_id, start_time_us DESC);
CREATE INDEX spend_logs_team ON spend_logs (team_id, start_time_us DESC);

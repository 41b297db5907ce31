-- Whether a call was answered from the response cache (it then costs nothing).
ALTER TABLE spend_logs ADD COLUMN cache_hit BOOLEAN NOT NULL DEFAULT FALSE;

-- Tags with budgets of their own (spend lands on every tag of a call either way).
CREATE TABLE tags (LIKE organizations INCLUDING ALL);

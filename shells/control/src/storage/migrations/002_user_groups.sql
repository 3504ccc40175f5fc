-- Migration 2: each user's groups from the identity provider's group claim at their most
-- recent single sign-on (a JSON list of strings, sanitized by the core: valid group names,
-- sorted, at most 64). Users from before have none until they sign on again.

ALTER TABLE users ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';

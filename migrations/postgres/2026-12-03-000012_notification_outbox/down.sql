DROP TABLE activity_deletions;
DROP TABLE notification_outbox;

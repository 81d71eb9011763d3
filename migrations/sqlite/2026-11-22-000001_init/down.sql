DROP TABLE service_meta;
DROP TABLE descriptors;
DROP TABLE lifecycles;
DROP TABLE tasks;
DROP TABLE activities;

DROP TABLE executor_runs;

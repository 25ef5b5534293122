DROP INDEX audit.events_at_brin;

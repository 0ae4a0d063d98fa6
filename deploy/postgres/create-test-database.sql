-- docker compose: run once by the postgres image when its volume is new. The test suite
-- uses its own database (TEST_DATABASE_URL) so it never touches the development data.
CREATE DATABASE sms_relay_test OWNER sms_relay;

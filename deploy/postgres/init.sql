-- One PostgreSQL server, one database per service (each service owns its schema and migrations).
-- Run once by the postgres image on an empty volume. The ACA-Py agents create their own wallet
-- databases (askar postgres_storage with the admin account).
CREATE DATABASE cartera_issuer;
CREATE DATABASE cartera_verifier;
CREATE DATABASE cartera_wallet;

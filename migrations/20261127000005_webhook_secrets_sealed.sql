-- Webhook signing secrets are kept encrypted (XChaCha20-Poly1305 under the fleet's
-- FREEAGENT_ENCRYPTION_KEY, bound to the webhook's id), no longer in clear.
--
-- Rows written before this migration keep their clear `secret` until a replica
-- starts: it seals them into `secret_sealed` and clears `secret`. Until then
-- deliveries read either form. The clear column stays (nullable) so that replicas
-- of the previous version keep running during a rolling upgrade (they cannot sign
-- for sealed rows; the new replicas deliver those).

ALTER TABLE webhooks ADD COLUMN secret_sealed BYTEA;
ALTER TABLE webhooks ALTER COLUMN secret DROP NOT NULL;
ALTER TABLE webhooks ADD CONSTRAINT webhooks_secret_present CHECK (secret IS NOT NULL OR secret_sealed IS NOT NULL);
